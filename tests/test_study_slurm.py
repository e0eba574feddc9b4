"""A tiny real study (2 variants x 2 benchmarks + one 5-seed probe + A and C) on the local executor and on a
real single-node SLURM cluster (scripts/slurm/start_cluster.sh): one SLURM job is cancelled half-way
(scancel), the rerun runs only what was missing, and both executors end with the same leaderboard.

Skips, saying why, when no cluster answers (sinfo) or submitit is missing."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from study_fakes import cluster_reason

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """Artifacts (two tiny random checkpoints, mirror datasets, LLaVA-558K and SPair fixtures) + the study dict."""
    from lmms_ac.testing.datasets import write_llava_pretrain, write_mirror
    from lmms_ac.testing.spair import write_photo_fixture
    from lmms_ac.testing.tiny import convert_to_original, make_llava_hf

    reason = cluster_reason()  # before building anything
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("study")
    models = []
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        hf = make_llava_hf(str(root / "ckpt" / name), seed=seed)
        orig = convert_to_original(
            hf, str(root / "ckpt" / f"{name}-orig"), tower_dir=str(root / "ckpt" / f"{name}-clip-tower")
        )
        models.append(
            {
                "name": name,
                "pretrained": hf,
                "model_args": {"device": "cpu"},
                "stage1": hf,
                "vision": f"clip:{orig['tower']}",
            }
        )
    write_mirror(str(root / "mirror"))
    pretrain = write_llava_pretrain(str(root / "llava-558k"), n=4)
    write_photo_fixture(root / "spair")
    study = {
        "name": "tiny",
        "env": {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "LMMS_AC_DATASETS": str(root / "mirror"),
            "LMMS_AC_CACHE": str(root / "cache"),
            "OMP_NUM_THREADS": "1",
        },
        "models": models,
        "benchmarks": ["mme", "seed"],
        "probes": [{"perturbation": "patchshuffle4", "seeds": 5, "benchmarks": ["mme"]}],
        "lmms_eval": {"batch_size": 8, "limit": 4, "log_samples": False},
        "scores": {
            "A": {"captions": pretrain["captions"], "images": pretrain["images"], "n": 4},
            "C": {"spair": str(root / "spair"), "limit": 4},
            "device": "cpu",
        },
        "report": {"outputs": ["table", "scores", "leaderboard"], "recommend_benchmark": "mme"},
    }
    return root, study


def _write(root: Path, study: dict, name: str, **over) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**study, **over}), encoding="utf-8")
    return path


def test_study_local_and_slurm_resume_after_scancel(tiny_study):
    import pandas as pd

    from lmms_ac.study import state as S
    from lmms_ac.study.report import build_study_report
    from lmms_ac.study.runner import execute, last_run, prepare
    from lmms_ac.study.spec import load_study

    root, data = tiny_study
    quiet = print
    # --- the local executor
    local = load_study(
        _write(root, data, "local", output="out-local", executor={"type": "local", "gpus": "none", "max_attempts": 1})
    )
    t0 = time.time()
    assert execute(local, printer=quiet) == 0, "local run failed: see out-local/jobs/*/log.txt"
    print(f"local executor: {time.time() - t0:.0f} s")
    assert len(prepare(local).done) == 18  # 2 models x (2 benchmarks + 5 probe seeds) + 2 x (A + C)
    build_study_report(local, printer=quiet)

    # --- SLURM: cancel tiny-b's evaluation job half-way
    slurm = load_study(
        _write(
            root,
            data,
            "slurm",
            output="out-slurm",
            executor={
                "type": "slurm",
                "max_attempts": 2,
                "slurm": {"time": 30, "gpus_per_job": 0, "cpus_per_job": 1, "array_parallelism": 4, "poll_s": 2},
            },
        )
    )
    out = slurm.output_dir
    victim = next(j for j in prepare(slurm).jobs if j.kind == "eval" and j.entry == "tiny-b")
    vdir = out / "jobs" / victim.job_id
    cancelled = {}

    def cancel_half_way():
        deadline, seen = time.time() + 600, None
        while time.time() < deadline:
            info = S.read_json(vdir / "running.json")
            if info and info.get("slurm_id"):
                seen = seen or time.time()
                # 2 s after the worker started: lmms-eval is still starting (its imports alone take ~5 s here);
                # the whole tiny evaluation now ends within 8 s of it, too soon for a later cut
                if time.time() - seen > 2:
                    cancelled["id"] = info["slurm_id"]  # <array>_<task>: scancel refuses the raw id
                    subprocess.run(["scancel", str(info["slurm_id"])], check=True)
                    return
            time.sleep(0.5)

    t = threading.Thread(target=cancel_half_way, daemon=True)
    t.start()
    t0 = time.time()
    assert execute(slurm, printer=quiet) == 1  # the cancelled job's units are missing
    t.join(timeout=5)
    print(f"slurm run 1: {time.time() - t0:.0f} s")
    assert cancelled, "the evaluation job never started on the cluster"
    first = last_run(out)
    assert len(first["jobs_run"]) == 6
    assert first["outcomes"][victim.job_id]["ok"] is False and first["outcomes"][victim.job_id].get("cancelled")
    assert not any(S.unit_done(out, u.unit_id, "eval") for u in victim.units)  # nothing looks done
    assert S.attempts(vdir)[-1].get("outcome") == "interrupted"  # cut off: an interruption, not a failure
    # --- the rerun does only what was missing
    t0 = time.time()
    assert execute(slurm, printer=quiet) == 0
    print(f"slurm run 2: {time.time() - t0:.0f} s")
    second = last_run(out)
    assert second["jobs_run"] == [victim.job_id]
    assert len(S.attempts(vdir)) == 2 and S.attempts(vdir)[-1]["outcome"] == "ok"
    assert S.attempts(vdir)[-1]["slurm_id"] != str(cancelled["id"])
    build_study_report(slurm, printer=quiet)
    a = pd.read_csv(local.output_dir / "report" / "leaderboard.csv")
    b = pd.read_csv(out / "report" / "leaderboard.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
    assert sorted(a["variant"]) == ["tiny-a", "tiny-b"] and a["A"].notna().all() and a["C"].notna().all()
    assert any(c.startswith("drop_") for c in a.columns)
