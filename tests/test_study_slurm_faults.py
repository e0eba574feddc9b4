"""The study runner on a real single-node SLURM cluster (scripts/slurm/start_cluster.sh) against real faults,
with stand-in evaluations that take seconds: the controller restarted in the middle of a study,
`scontrol requeue` of a running job, `kill -9` of `study run` and an immediate rerun, and a job id that
SLURM hands out again to another job. Each ends with the leaderboard of an uninterrupted run, each job
submitted once (nothing in the queue is ever resubmitted) and no done file written twice.

Skips, saying why, when no cluster answers or submitit is missing; the controller restart needs root."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from lmms_ac.study import slurm_queue as Q
from lmms_ac.study import state as S
from lmms_ac.study.spec import load_study
from study_fakes import cli_command, cluster_reason, done_files, install_fakes, study_data, write_study

pytestmark = pytest.mark.slow

STATE = Path(os.environ.get("LMMS_AC_SLURM_STATE", "/var/tmp/lmms-ac-slurm"))
SLURM = {"type": "slurm", "max_attempts": 2,
         "slurm": {"time": 10, "gpus_per_job": 0, "cpus_per_job": 1, "array_parallelism": 4, "poll_s": 1}}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def cluster():
    reason = cluster_reason()
    if reason:
        pytest.skip(reason)


def _quiet(_msg: str) -> None:
    pass


def _leaderboard(study) -> pd.DataFrame:
    from lmms_ac.study.report import build_study_report

    build_study_report(study, printer=_quiet)
    return pd.read_csv(study.output_dir / "report" / "leaderboard.csv")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    bindir = install_fakes(root / "bin")
    path = write_study(root, study_data(root, scores={}))
    res = subprocess.run(cli_command(bindir, "study", "run", str(path)), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return _leaderboard(load_study(path))


def _setup(tmp_path, monkeypatch, **env):
    bindir = install_fakes(tmp_path / "bin")
    monkeypatch.setattr("lmms_ac.study.plan.bin_path", lambda name: str(bindir / name))
    data = study_data(tmp_path, scores={}, executor=SLURM, env={k: str(v) for k, v in env.items()})
    return bindir, load_study(write_study(tmp_path, data))


def _running(out: Path) -> dict:
    """job id -> running.json of each job whose stand-in evaluation runs on the cluster now."""
    found = {}
    for d in (out / "jobs").glob("*") if (out / "jobs").is_dir() else []:
        info = S.read_json(d / "running.json")
        if info and info.get("slurm_id") and info.get("child_pid"):
            found[d.name] = info
    return found


def _wait_for(cond, what: str, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _check_clean_end(out: Path, reference: pd.DataFrame, study, submissions: int = 1) -> None:
    assert not S.duplicates(out)
    assert len(list((out / "slurm").iterdir())) == submissions  # nothing was submitted again
    for d in (out / "jobs").iterdir():
        assert S.failures(S.attempts(d)) == 0
    pd.testing.assert_frame_equal(_leaderboard(study), reference, check_exact=False, rtol=1e-9)


@pytest.mark.skipif(os.geteuid() != 0, reason="restarting slurmctld needs root")
def test_controller_restart_in_the_middle_of_a_study(tmp_path, monkeypatch, reference):
    from lmms_ac.study.runner import execute

    _, study = _setup(tmp_path, monkeypatch, FAKE_SLEEP=30)
    out = study.output_dir
    said = []

    def restart():
        _wait_for(lambda: len(_running(out)) == 2, "both jobs to run")
        pid = int((STATE / "slurmctld.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        _wait_for(lambda: not Path(f"/proc/{pid}").exists(), "slurmctld to stop", 60)
        time.sleep(12)  # squeue fails after ~9 s of trying: the runner polls a silent controller meanwhile
        subprocess.run(["/usr/sbin/slurmctld"], check=True)

    t = threading.Thread(target=restart, daemon=True)
    t.start()
    assert execute(study, printer=said.append) == 0, "\n".join(said)
    t.join(timeout=5)
    assert any("SLURM does not answer" in s for s in said) and any("SLURM answers again" in s for s in said)
    for d in (out / "jobs").iterdir():
        assert [a["outcome"] for a in S.attempts(d)] == ["ok"]  # never resubmitted, never given up on
    _check_clean_end(out, reference, study)


def test_scontrol_requeue_of_a_running_job(tmp_path, monkeypatch, reference):
    from lmms_ac.study.runner import execute

    _, study = _setup(tmp_path, monkeypatch, FAKE_SLEEP=8)
    out = study.output_dir
    requeued = {}

    def requeue():
        _wait_for(lambda: _running(out), "a job to run")
        job, info = sorted(_running(out).items())[0]
        subprocess.run(["scontrol", "requeue", info["slurm_id"]], check=True)
        requeued[job] = info["slurm_id"]
        # SLURM holds a requeued job back for a while (BeginTime); release it to keep the test short, but only
        # once it is back to PENDING: released while its old step still ends (COMPLETING), the rerun fails at
        # launch (exit 1) and the runner rightly resubmits it as a new job
        _wait_for(lambda: S.attempts(out / "jobs" / job)[-1].get("end"), "the interrupted attempt's record", 60)
        name = info.get("slurm_name")
        _wait_for(lambda: Q.controller_state(info["slurm_id"], name, None) == "PENDING", "the job to be pending", 60)
        for _ in range(20):
            if subprocess.run(["scontrol", "update", f"jobid={info['slurm_id']}", "StartTime=now"]).returncode == 0:
                break
            time.sleep(0.5)

    t = threading.Thread(target=requeue, daemon=True)
    t.start()
    said = []
    assert execute(study, printer=said.append) == 0, "\n".join(said)
    t.join(timeout=5)
    ((job, slurm_id),) = requeued.items()
    tries = S.attempts(out / "jobs" / job)
    assert [a["outcome"] for a in tries] == ["interrupted", "ok"], (tries, said)
    assert "SIGTERM" in tries[0]["last_line"] and tries[1]["slurm_id"] == slurm_id, (tries, said)  # requeued
    assert tries[1].get("slurm_restart_count") == "1"
    spec = S.read_json(out / "jobs" / job / "job.json")
    for u in spec["units"]:  # written once, by the requeued run: the interrupted one wrote nothing done
        marker = S.read_json(S.done_path(out, u["unit_id"], "eval"))["lmms_ac_study"]
        assert marker["job_id"] == job and marker["slurm_restart_count"] == "1"
    _check_clean_end(out, reference, study)


def test_kill_9_of_study_run_then_the_rerun_waits_for_the_queued_jobs(tmp_path, monkeypatch, reference):
    from lmms_ac.study.runner import execute, last_run

    bindir, study = _setup(tmp_path, monkeypatch, FAKE_SLEEP=8)
    out = study.output_dir
    path = Path(study.root) / "study.yaml"
    first = subprocess.Popen(cli_command(bindir, "study", "run", str(path)))
    _wait_for(lambda: _running(out), "a job to run")
    first.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    before = {d.name: S.read_json(d / "slurm.json") for d in (out / "jobs").iterdir()}
    said = []
    assert execute(study, printer=said.append) == 0, "\n".join(said)
    run = last_run(out)
    assert run["jobs_run"] == [] and sorted(run["jobs_watched"]) == sorted(before)  # watched, not resubmitted
    assert all(S.read_json(out / "jobs" / j / "slurm.json") == doc for j, doc in before.items())
    _check_clean_end(out, reference, study)


def test_a_reused_job_id_is_not_taken_for_ours(tmp_path, monkeypatch, reference):
    """The job ids of a finished-off submission are held by someone else's jobs (as after a controller
    restart that wiped its state): the rerun sees those ids in the queue under another name, knows they are
    not ours, and runs the jobs again."""
    from lmms_ac.study.runner import execute, last_run, prepare, write_job

    _, study = _setup(tmp_path, monkeypatch)
    out = study.output_dir
    other = subprocess.run(
        ["sbatch", "--parsable", "--hold", "--array=0-1", "--job-name=someone-else", "--wrap", "sleep 120"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        for i, job in enumerate(prepare(study).jobs):  # our records of an earlier submission under those ids
            d = write_job(job, out)
            S.write_json(d / "slurm.json", {"slurm_job_id": f"{other}_{i}", "slurm_name": "lmms-ac-fake-0ld0ld00",
                                            "submitted": time.time() - 3600})  # fmt: skip
        assert execute(study, printer=_quiet) == 0
        assert len(last_run(out)["jobs_run"]) == 2
    finally:
        subprocess.run(["scancel", other], check=False)
    before = done_files(out)
    assert execute(study, printer=_quiet) == 0 and done_files(out) == before
    _check_clean_end(out, reference, study)
