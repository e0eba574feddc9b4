"""Running studies with stand-in `lmms-eval` / `lmms-ac` programs (real worker, real subprocesses, fake
evaluations): resume, skip, retry with logs kept, interruption, status, report, re-planning, GPU slots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lmms_ac.study import liveness as L
from lmms_ac.study import state as S
from lmms_ac.study import worker as W
from lmms_ac.study.slurm_queue import QueueEntry
from lmms_ac.study.runner import execute, last_run, prepare
from lmms_ac.study.spec import parse_study
from study_fakes import install_fakes, study_data

VERSIONS = {"lmms-eval": "0.7.3", "lmms-ac": "0.1.0", "transformers": "4.0"}


@pytest.fixture
def fake_bins(tmp_path, monkeypatch):
    bindir = install_fakes(tmp_path / "bin")
    monkeypatch.setattr("lmms_ac.study.plan.bin_path", lambda name: str(bindir / name))
    # no real cluster: the queue is empty and keeps no records (tests that need more plant them)
    monkeypatch.setattr("lmms_ac.study.slurm_queue.squeue", lambda: {})
    monkeypatch.setattr("lmms_ac.study.slurm_queue.accounting_state", lambda slurm_id, name, submitted: None)
    monkeypatch.setattr("lmms_ac.study.slurm_queue.controller_state", lambda slurm_id, name, submitted: None)
    return bindir


def _study(tmp_path, **over):
    return parse_study(study_data(tmp_path, **over), tmp_path)


def _quiet(_msg: str) -> None:
    pass


@pytest.mark.slow
def test_run_resume_replan_and_report(tmp_path, fake_bins):
    from lmms_ac.study.report import build_study_report

    study = _study(
        tmp_path,
        probes=[{"perturbation": "patchshuffle4", "seeds": 2, "benchmarks": ["mme"]}],
        report={
            "outputs": ["table", "scores", "leaderboard", "fit", "recommend", "robustness", "plots"],
            "recommend_benchmark": "mme",
        },
    )
    assert execute(study, printer=_quiet, versions=VERSIONS) == 0
    first = last_run(study.output_dir)
    assert len(first["jobs_run"]) == 6  # 2 eval (one per model, all 4 tasks) + 2 score-a + 2 score-c
    prep = prepare(study, VERSIONS)
    assert not prep.pending and len(prep.done) == 12
    for u in prep.done:  # the done file carries its unit id
        doc = json.loads(S.done_path(study.output_dir, u.unit_id, u.kind).read_text())
        assert doc["lmms_ac_study"]["unit_id"] == u.unit_id
        if u.kind == "eval":
            assert list(doc["results"]) == [u.task]
    # a rerun does nothing
    assert execute(study, printer=_quiet, versions=VERSIONS) == 0
    assert last_run(study.output_dir)["jobs_run"] == []
    # the report: table, scores, leaderboard with law predictions, fit, recommendation
    summary = build_study_report(study, printer=_quiet, versions=VERSIONS)
    rdir = study.output_dir / "report"
    import pandas as pd

    board = pd.read_csv(rdir / "leaderboard.csv")
    assert sorted(board["variant"]) == ["a", "b"] and {"mme", "seed", "A", "C"} <= set(board.columns)
    assert board.set_index("variant").loc["b", "A"] == -1.5
    assert (rdir / "scores.csv").exists() and (rdir / "recommend.txt").exists()
    assert "drop_patchshuffle4" in board.columns and (rdir / "figures" / "robustness_drops.png").exists()
    assert set(pd.read_csv(rdir / "robustness.csv")["perturbation"]) == {"patchshuffle4"}
    assert (rdir / "figures" / "law_surface_mme.png").exists() and (rdir / "fit.json").exists()
    assert str(rdir / "table.csv") in summary["written"]
    # changing one model's arguments re-runs only that model's evaluation job
    data = study.model_dump()
    data.pop("root", None)
    data["models"][1]["model_args"] = {"dtype": "bfloat16"}
    changed = parse_study(data, tmp_path)
    assert execute(changed, printer=_quiet, versions=VERSIONS) == 0
    run = last_run(study.output_dir)
    assert len(run["jobs_run"]) == 1
    spec = json.loads((study.output_dir / "jobs" / run["jobs_run"][0] / "job.json").read_text())
    assert spec["entry"] == "b" and spec["kind"] == "eval" and "dtype=bfloat16" in " ".join(spec["argv"])
    # the report reads the current units only: b's old results do not appear
    build_study_report(changed, printer=_quiet, versions=VERSIONS)
    table = pd.read_csv(rdir / "table.csv")
    assert len(table[(table.variant == "b") & (table.metric == "acc")]) == 4


@pytest.mark.slow
def test_failure_keeps_logs_retries_then_gives_up(tmp_path, fake_bins):
    from lmms_ac.study.status import compute_status, render_status

    study = _study(tmp_path, env={"FAKE_FAIL": "seed"}, scores={})
    assert execute(study, printer=_quiet, versions=VERSIONS) == 1
    jobs = sorted((study.output_dir / "jobs").iterdir())
    assert len(jobs) == 2
    for d in jobs:
        tries = S.attempts(d)
        assert [t["outcome"] for t in tries] == ["failed", "failed"] and tries[-1]["exit_code"] == 0
        assert "wrote no results" in tries[-1]["last_line"]
        assert (d / "log.attempt1.txt").exists() and "RuntimeError" in (d / "log.txt").read_text()
    assert not list((study.output_dir / "done").glob("*")) if (study.output_dir / "done").exists() else True
    st = compute_status(study, VERSIONS)
    assert st.counts["failed"] == 4 and st.counts["done"] == 0
    text = render_status(st, study)
    assert "failed" in text and "RuntimeError" not in text.split("failed (attempts")[0]
    assert "dataset of seed not found" in text  # the last log line of the failed job
    # attempts used up: a rerun skips them; --retry-failed tries again (now fixed)
    assert execute(study, printer=_quiet, versions=VERSIONS) == 1
    assert last_run(study.output_dir)["jobs_run"] == []
    fixed = _study(tmp_path, scores={})
    assert execute(fixed, printer=_quiet, versions=VERSIONS, retry_failed=True) == 0
    assert compute_status(fixed, VERSIONS).counts["done"] == 4


@pytest.mark.slow
def test_interrupted_job_leaves_nothing_that_looks_done(tmp_path, fake_bins, monkeypatch):
    from lmms_ac.study.runner import write_job
    from lmms_ac.study.status import compute_status

    study = _study(
        tmp_path, env={"FAKE_SLEEP": "60"}, scores={}, models=[{"name": "a", "pretrained": str(tmp_path / "ckpt-a")}]
    )
    prep = prepare(study, VERSIONS)
    job_dir = write_job(prep.jobs[0], study.output_dir)
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from lmms_ac.study.worker import run_job; run_job({str(job_dir)!r})"],
        start_new_session=True,
    )
    deadline = time.time() + 60
    while not (job_dir / "log.txt").exists() or "fake lmms-eval" not in (job_dir / "log.txt").read_text():
        assert time.time() < deadline, "the job did not start"
        time.sleep(0.2)
    assert compute_status(study, VERSIONS).counts["running"] == 2
    os.killpg(proc.pid, signal.SIGKILL)  # the worker dies (kill -9): no cleanup at all
    proc.wait()
    assert not (study.output_dir / "done").exists()
    info = S.read_json(job_dir / "running.json")  # lmms-eval runs on in its own session
    child, child_start = info["child_pid"], info["child_start"]
    assert L.alive(child, child_start) and not L.alive(info["pid"], info["pid_start"])
    # interrupted at once: the recorded worker is dead (no waiting for a heartbeat to go stale)
    st = compute_status(study, VERSIONS)
    assert st.counts["interrupted"] == 2
    # the next run does the job again (second attempt) and only then is it done
    fast = _study(tmp_path, scores={}, models=[{"name": "a", "pretrained": str(tmp_path / "ckpt-a")}])
    t0 = time.time()
    assert execute(fast, printer=_quiet, versions=VERSIONS) == 0
    assert time.time() - t0 < 40  # at once (the stray program is stopped, not waited for)
    assert last_run(study.output_dir)["jobs_run"] == [job_dir.name]
    tries = S.attempts(job_dir)
    assert len(tries) == 2 and tries[-1]["outcome"] == "ok" and S.failures(tries) == 0
    # the second attempt stopped the first one's program before writing where it writes
    assert not L.alive(child, child_start)
    assert f"stopped pid {child}, left running by attempt 1" in (job_dir / "log.txt").read_text()


def test_local_gpu_slots_run_in_parallel(monkeypatch, tmp_path):
    from lmms_ac.study.executors import gpu_slots, run_local
    from lmms_ac.study.spec import ExecutorSpec

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    ex = ExecutorSpec(gpus="auto", gpus_per_job=2, max_attempts=1)
    assert gpu_slots(ex) == [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert gpu_slots(ExecutorSpec(gpus="none")) == [{"CUDA_VISIBLE_DEVICES": ""}]
    assert gpu_slots(ExecutorSpec(gpus=[3])) == [{"CUDA_VISIBLE_DEVICES": "3"}]
    with pytest.raises(ValueError, match="executor.gpus is 8 but 4 GPU"):
        gpu_slots(ExecutorSpec(gpus=8))
    seen, active, peak = [], [0], [0]
    lock = threading.Lock()

    def runner(job_dir, env):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            seen.append(env["CUDA_VISIBLE_DEVICES"])
        time.sleep(0.3)
        with lock:
            active[0] -= 1
        return {"job_id": Path(job_dir).name, "ok": True, "exit_code": 0, "missing": [], "attempt": 1, "last_line": ""}

    dirs = [tmp_path / f"j{i}" for i in range(4)]
    res = run_local(dirs, ex, runner, printer=_quiet)
    assert sorted(res) == ["j0", "j1", "j2", "j3"] and peak[0] == 2
    assert sorted(seen) == ["0,1", "0,1", "2,3", "2,3"]


@pytest.mark.slow
def test_jobs_queued_on_slurm_are_not_submitted_twice(tmp_path, fake_bins, monkeypatch):
    from lmms_ac.study.runner import write_job
    from lmms_ac.study.status import compute_status

    study = _study(tmp_path, scores={})
    prep = prepare(study, VERSIONS)
    queued_dir = write_job(prep.jobs[0], study.output_dir)
    S.write_json(
        queued_dir / "slurm.json",
        {"slurm_job_id": "7_0", "slurm_name": "lmms-ac-fake-0000", "folder": "x", "submitted": time.time()},
    )
    # the same id under another name: a job that got a reused id after a controller restart, not ours
    reused = {"7_0": QueueEntry("7_0", "someone-else", "RUNNING")}
    monkeypatch.setattr("lmms_ac.study.slurm_queue.squeue", lambda: reused)
    assert compute_status(study, VERSIONS).counts["queued"] == 0
    ours = {"7_0": QueueEntry("7_0", "lmms-ac-fake-0000", "PENDING")}
    monkeypatch.setattr("lmms_ac.study.slurm_queue.squeue", lambda: ours)
    assert compute_status(study, VERSIONS).counts["queued"] == 2
    assert execute(study, printer=_quiet, versions=VERSIONS) == 1
    run = last_run(study.output_dir)
    assert run["jobs_run"] == [prep.jobs[1].job_id] and "on SLURM as 7_0" in run["skipped"][prep.jobs[0].job_id]
    # SLURM does not answer (a restarting controller): a job that may be queued is not started again
    monkeypatch.setattr("lmms_ac.study.slurm_queue.squeue", lambda: None)
    monkeypatch.setattr("lmms_ac.study.slurm_queue.client_available", lambda: True)
    assert execute(study, printer=_quiet, versions=VERSIONS) == 1
    assert "SLURM does not answer" in last_run(study.output_dir)["skipped"][prep.jobs[0].job_id]


class _FakeSubmitit:
    """Stands in for submitit and the cluster: runs each array element at once (the real worker, which
    records its attempt); elements named in ``cancel`` die as ``scancel`` leaves them (no attempt; the
    accounting record says CANCELLED). The queue is empty afterwards: the runner reads our records."""

    def __init__(self, monkeypatch, cancel=()):
        self.cancel, self.arrays, self.params, self.states = set(cancel), [], {}, {}
        outer = self

        class Job:
            def __init__(self, job_id, call):
                self.job_id = job_id
                if Path(call.job_dir).name in outer.cancel:
                    outer.cancel.discard(Path(call.job_dir).name)  # only the first time
                    outer.states[job_id] = "CANCELLED"
                else:
                    call()

        class SlurmExecutor:
            def __init__(self, folder, max_num_timeout=3):
                self.folder = folder

            def update_parameters(self, **kw):
                outer.params = kw

            def submit_array(self, calls):
                n = len(outer.arrays) + 1
                outer.arrays.append([Path(c.job_dir).name for c in calls])
                return [Job(f"{n}_{i}", c) for i, c in enumerate(calls)]

        self.SlurmExecutor = SlurmExecutor
        monkeypatch.setitem(sys.modules, "submitit", self)
        monkeypatch.setattr("lmms_ac.study.slurm.sbatch_available", lambda: True)
        monkeypatch.setattr(
            "lmms_ac.study.slurm_queue.accounting_state", lambda slurm_id, name, submitted: self.states.get(slurm_id)
        )


@pytest.mark.slow
def test_slurm_executor_retries_failures_not_cancellations(tmp_path, fake_bins, monkeypatch):
    study = _study(
        tmp_path,
        env={"FAKE_FAIL": "seed"},
        scores={"A": {"captions": "c.json", "images": "img"}},
        executor={
            "type": "slurm",
            "max_attempts": 2,
            "slurm": {
                "partition": "p",
                "account": "acc",
                "qos": "hi",
                "time": 5,
                "gpus_per_job": 1,
                "constraint": "a100",
                "array_parallelism": 2,
                "poll_s": 0.01,
                "mem_gb": 2,
            },
        },
    )
    prep = prepare(study, VERSIONS)
    a_score = next(j for j in prep.jobs if j.kind == "score-a" and j.entry == "a").job_id
    fake = _FakeSubmitit(monkeypatch, cancel=[a_score])
    assert execute(study, printer=_quiet, versions=VERSIONS) == 1
    assert fake.params.pop("job_name").startswith("lmms-ac-fake-")  # one name per submission
    assert fake.params == {
        "time": 5,
        "cpus_per_task": 8,
        "array_parallelism": 2,
        "signal_delay_s": 120,
        "nodes": 1,
        "ntasks_per_node": 1,
        "gpus_per_node": 1,
        "partition": "p",
        "account": "acc",
        "qos": "hi",
        "constraint": "a100",
        "mem": "2048MB",
    }
    evals = sorted(j.job_id for j in prep.jobs if j.kind == "eval")
    assert len(fake.arrays) == 2 and sorted(fake.arrays[1]) == evals  # failed evals resubmitted, the cancel not
    run = last_run(study.output_dir)
    assert run["outcomes"][a_score]["cancelled"] is True
    assert all(len(S.attempts(study.output_dir / "jobs" / j)) == 2 for j in evals)
    # the next run picks up the cancelled job (and the evals, once they work)
    fixed = _study(
        tmp_path,
        scores={"A": {"captions": "c.json", "images": "img"}},
        executor={"type": "slurm", "max_attempts": 2, "slurm": {"poll_s": 0.01}},
    )
    assert execute(fixed, printer=_quiet, versions=VERSIONS, retry_failed=True) == 0
    assert sorted(fake.arrays[2]) == sorted(evals + [a_score])


@pytest.mark.slow
def test_slurm_no_wait_submits_and_returns(tmp_path, fake_bins, monkeypatch):
    study = _study(tmp_path, scores={}, executor={"type": "slurm", "slurm": {"poll_s": 0.01}})
    fake = _FakeSubmitit(monkeypatch)
    assert execute(study, printer=_quiet, versions=VERSIONS, wait=False) == 0
    assert len(fake.arrays) == 1 and len(fake.arrays[0]) == 2
    for job_id in fake.arrays[0]:
        assert S.read_json(study.output_dir / "jobs" / job_id / "slurm.json")["slurm_job_id"].startswith("1_")


@pytest.mark.slow
def test_ctrl_c_stops_every_running_program_of_the_run():
    """The local executor owns one ChildProcesses per run (no module-level set): terminate_all stops each
    registered program's whole session, and a finished one is forgotten."""
    children = W.ChildProcesses()
    procs = [subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(2)]
    done = subprocess.Popen(["true"], start_new_session=True)
    done.wait()
    for p in procs + [done]:
        children.add(p)
    children.discard(done)
    children.terminate_all()
    assert [p.wait(timeout=10) for p in procs] == [-signal.SIGTERM, -signal.SIGTERM]
    assert not hasattr(W, "RUNNING")


def test_the_example_study_file_documents_every_executor_key():
    """Each executor / executor.slurm key appears in `study init`'s example with a comment saying what it does."""
    import re

    from lmms_ac.study.example import EXAMPLE
    from lmms_ac.study.spec import ExecutorSpec, SlurmSpec

    block = EXAMPLE.split("\nexecutor:\n", 1)[1].split("\nreport:\n", 1)[0]
    for key in list(ExecutorSpec.model_fields) + list(SlurmSpec.model_fields):
        line = re.search(rf"^\s*#?\s*{key}:.*$", block, re.M)
        assert line is not None, f"executor key {key} is not in the example study file"
        if key != "slurm":
            assert "#" in line.group(0).split(f"{key}:", 1)[1], f"executor key {key} has no comment"
    assert "poll_s" in block and "squeue" in block
