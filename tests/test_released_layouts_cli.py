"""Every released checkpoint layout (lmms_ac/testing/released.py, a-e) evaluates through the real
``lmms-eval --model lmms_ac_llava`` CLI, offline, with the vision tower's hub id read from a local HF cache."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmms_ac.testing.released import LAYOUTS, build_hf_cache, build_layout

pytestmark = pytest.mark.slow  # each test starts the lmms-eval CLI

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released_cli")
    build_hf_cache(str(root / "hf"))
    return {"root": root, "hf_home": root / "hf", **{name: build_layout(str(root), name) for name in LAYOUTS}}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_released_layout_through_the_lmms_eval_cli(released, mirror_dir, tmp_path, name):
    layout = released[name]
    args = f"pretrained={layout['checkpoint']},device=cpu,variant=layout_{name}"
    if layout.get("model_base"):
        args += f",model_base={layout['model_base']}"
    env = {
        **os.environ,
        "HF_HOME": str(released["hf_home"]),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "LMMS_AC_DATASETS": mirror_dir,
    }
    env.pop("HF_HUB_CACHE", None)
    env.pop("LMMS_EVAL_PLUGINS", None)
    out = tmp_path / "logs"
    cmd = [str(BIN / "lmms-eval"), "--model", "lmms_ac_llava", "--model_args", args, "--tasks", "mme"]
    cmd += ["--batch_size", "2", "--output_path", str(out), "--log_samples"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, log
    results = glob.glob(f"{out}/**/*_results.json", recursive=True)
    assert results, f"no results file (lmms-eval exits 0 when evaluation raises):\n{log}"
    with open(results[0]) as fh:
        doc = json.load(fh)
    assert "mme" in doc["results"] and doc["config"]["model"] == "lmms_ac_llava"
    samples = glob.glob(f"{out}/**/*_samples_mme.jsonl", recursive=True)
    with open(samples[0]) as fh:
        rows = [json.loads(line) for line in fh]
    assert rows and all(isinstance(r["filtered_resps"][0], str) for r in rows)
