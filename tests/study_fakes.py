"""Stand-in `lmms-eval` / `lmms-ac` programs and a two-model study for the study-runner tests (real worker,
real subprocesses and, where a cluster runs, real SLURM; fake evaluations that take seconds)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

# lmms-eval stand-in: the 0.7 results layout; exits 0 and writes nothing when a task is in $FAKE_FAIL
# (or the model variant in $FAKE_FAIL_VARIANT); sleeps $FAKE_SLEEP seconds first
FAKE_LMMS_EVAL = r"""
import argparse, hashlib, json, os, sys, time
from datetime import datetime
p = argparse.ArgumentParser()
p.add_argument("--model"); p.add_argument("--model_args"); p.add_argument("--tasks"); p.add_argument("--batch_size")
p.add_argument("--output_path"); p.add_argument("--verbosity"); p.add_argument("--log_samples", action="store_true")
p.add_argument("--limit")
a = p.parse_args()
tasks = a.tasks.split(",")
print("fake lmms-eval", a.model_args, tasks, flush=True)
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
args = dict(kv.split("=", 1) for kv in a.model_args.split(","))
bad = [t for t in tasks if t in os.environ.get("FAKE_FAIL", "").split(",")]
if args["variant"] in os.environ.get("FAKE_FAIL_VARIANT", "").split(","):
    bad = tasks
if bad:
    print("Traceback (most recent call last):\nRuntimeError: dataset of %s not found" % bad[0], flush=True)
    sys.exit(0)  # like lmms-eval: the exit code says nothing
args = dict(kv.split("=", 1) for kv in a.model_args.split(","))
def score(t):
    return int(hashlib.sha256((args["variant"] + t + args.get("dtype", "")).encode()).hexdigest()[:6], 16) / 0xFFFFFF
def meta(t):  # what a generated robustness task carries (lmms_ac.robustness.tasks.task_metadata)
    if "_patchshuffle4" not in t:
        return {"version": 1}
    seed = int(t.rsplit("_s", 1)[1]) if "_s" in t.split("patchshuffle4")[1] else 0
    return {"version": 1, "lmms_ac": {"base_task": t.split("_patchshuffle4")[0], "perturbation": "patchshuffle4",
                                      "severity": 4, "seed": seed}}
doc = {"results": {t: {"alias": t, "acc,none": score(t), "acc_stderr,none": 0.01} for t in tasks},
       "configs": {t: {"task": t, "metadata": meta(t)} for t in tasks},
       "n-samples": {t: {"original": 10, "effective": 10} for t in tasks},
       "versions": {t: 1 for t in tasks}, "higher_is_better": {t: {"acc": True} for t in tasks},
       "config": {"model": a.model, "model_args": a.model_args}, "lmms_eval_version": "0.7.3",
       "date": datetime.now().strftime("%Y%m%d_%H%M%S")}
out = os.path.join(a.output_path, "lmms_ac_llava")
os.makedirs(out, exist_ok=True)
json.dump(doc, open(os.path.join(out, doc["date"] + "_results.json"), "w"))
"""

# lmms-ac stand-in for score-a / score-c: one row per score through the real scores store
FAKE_LMMS_AC = r"""
import argparse, sys
from lmms_ac.scores.store import ScoreValue, record_score
p = argparse.ArgumentParser()
p.add_argument("cmd"); p.add_argument("--variant"); p.add_argument("--out")
p.add_argument("--ocr", action="store_true")
p.add_argument("--spair")
a, _ = p.parse_known_args()
names = ["A"] if a.cmd == "score-a" else (["C"] if a.spair else []) + (["C_ocr"] if a.ocr else [])
for i, name in enumerate(names):
    value = {"a": {"A": -2.0, "C": 0.4}, "b": {"A": -1.5, "C": 0.6}}.get(a.variant, {}).get(name, 0.5)
    record_score(a.out, variant=a.variant, vision="v", score=name, config={}, compute=lambda v=value: ScoreValue(v, 8))
    print(a.variant, name, value)
"""


def install_fakes(bindir: Path) -> Path:
    """Write the two stand-in programs into ``bindir``."""
    bindir.mkdir(parents=True, exist_ok=True)
    for name, src in (("lmms-eval", FAKE_LMMS_EVAL), ("lmms-ac", FAKE_LMMS_AC)):
        path = bindir / name
        path.write_text(f"#!{sys.executable}\n{src}")
        path.chmod(0o755)
    return bindir


def study_data(tmp_path: Path, **over: Any) -> Dict[str, Any]:
    """Two models (a, b) x mme, seed + A and C scores, local executor; ``over`` replaces top-level keys."""
    for name in ("ckpt-a", "ckpt-b"):
        (tmp_path / name).mkdir(exist_ok=True)
    data: Dict[str, Any] = {
        "name": "fake",
        "output": "out",
        "models": [
            {
                "name": "a",
                "pretrained": str(tmp_path / "ckpt-a"),
                "stage1": str(tmp_path / "ckpt-a"),
                "vision": "clip:tower-a",
            },
            {
                "name": "b",
                "pretrained": str(tmp_path / "ckpt-b"),
                "stage1": str(tmp_path / "ckpt-b"),
                "vision": "clip:tower-b",
                "model_args": {"dtype": "float32"},
            },
        ],
        "benchmarks": ["mme", "seed"],
        "scores": {"A": {"captions": "c.json", "images": "img", "n": 8}, "C": {"spair": "spair"}},
        "executor": {"type": "local", "gpus": "none", "max_attempts": 2},
        "report": {"outputs": ["table", "scores", "leaderboard", "fit", "recommend"], "recommend_benchmark": "mme"},
    }
    data.update(over)
    return data


def write_study(folder: Path, data: Dict[str, Any], name: str = "study.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def cli_command(bindir: Path, *args: str) -> list:
    """``lmms-ac <args>`` in a fresh Python that uses the stand-ins (for runs a test kills or runs twice)."""
    code = (
        "import sys; import lmms_ac.study.plan as P; "
        f"P.bin_path = lambda name: {str(bindir)!r} + '/' + name; "
        "from lmms_ac.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", code, *args]


def done_files(out: Path) -> Dict[str, tuple]:
    """done file -> (inode, mtime_ns, the job that wrote it): equal before and after means not rewritten."""
    found = {}
    for p in sorted((out / "done").glob("*.json")) if (out / "done").is_dir() else []:
        st = p.stat()
        found[p.name] = (st.st_ino, st.st_mtime_ns, json.loads(p.read_text())["lmms_ac_study"]["job_id"])
    return found


def cluster_reason() -> Optional[str]:
    """Why no SLURM test can run here (None: a node is up and submitit is installed)."""
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on this machine; start one with scripts/slurm/start_cluster.sh"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as err:
        return f"sinfo failed: {err}"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        said = out.stdout.strip() or out.stderr.strip()[:200]
        return f"no SLURM node is up (sinfo: {said}); run scripts/slurm/start_cluster.sh"
    try:
        import submitit  # noqa: F401
    except ImportError:
        return "submitit is not installed"
    return None
