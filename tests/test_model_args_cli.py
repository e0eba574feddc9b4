"""Through the real lmms-eval command: batch_size and booleans as model arguments (once "got multiple
values for keyword argument 'batch_size'")."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _run(tmp_path: Path, ckpt: str, mirror: str, model_args: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LMMS_AC_DATASETS": mirror, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("LMMS_EVAL_PLUGINS", None)
    cmd = [
        str(BIN / "lmms-eval"),
        "--model",
        "lmms_ac_llava",
        "--model_args",
        f"pretrained={ckpt},device=cpu,{model_args}",
        "--tasks",
        "mme",
        "--limit",
        "4",
        "--output_path",
        str(tmp_path / "out"),
        *extra,
    ]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_batch_size_and_strict_booleans_as_model_arguments(tmp_path, llava_hf_dir, mirror_dir):
    proc = _run(tmp_path, llava_hf_dir, mirror_dir, "batch_size=2,trust_remote_code=off")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert glob.glob(f"{tmp_path}/out/**/*_results.json", recursive=True), (proc.stdout + proc.stderr)[-4000:]
    assert "multiple values" not in proc.stderr
    (tmp_path / "bad").mkdir()
    bad = _run(tmp_path / "bad", llava_hf_dir, mirror_dir, "trust_remote_code=perhaps")
    assert "trust_remote_code='perhaps' is not a boolean" in bad.stdout + bad.stderr
    assert not glob.glob(f"{tmp_path}/bad/out/**/*_results.json", recursive=True)
