"""The study runner against real faults on the local executor: `kill -9` of `study run` and an immediate
rerun, SIGTERM of `study run` with `max_attempts: 1`, two `study run` at once, a read-only output folder;
plus the fast checks: done is written once, a late duplicate is kept and shown, a failed model is named
on the report page, the slurm executor without a cluster. Each real-fault run ends with the leaderboard
of an uninterrupted run and no done file written twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lmms_ac.study import state as S
from lmms_ac.study.spec import load_study, parse_study
from study_fakes import cli_command, done_files, install_fakes, study_data, write_study


def _quiet(_msg: str) -> None:
    pass


def _leaderboard(path: Path) -> pd.DataFrame:
    from lmms_ac.study.report import build_study_report

    study = load_study(path)
    build_study_report(study, printer=_quiet)
    return pd.read_csv(study.output_dir / "report" / "leaderboard.csv")


def _wait_for(cond, what: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _eval_started(out: Path) -> bool:
    logs = list((out / "jobs").glob("*/log.txt")) if (out / "jobs").is_dir() else []
    return any("fake lmms-eval" in p.read_text(errors="replace") for p in logs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The leaderboard of an uninterrupted run (same study, its own folder)."""
    root = tmp_path_factory.mktemp("reference")
    bindir = install_fakes(root / "bin")
    path = write_study(root, study_data(root, scores={}))
    res = subprocess.run(cli_command(bindir, "study", "run", str(path)), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return _leaderboard(path)


def _same_board(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=False, rtol=1e-9)


@pytest.mark.slow
def test_kill_9_of_study_run_then_an_immediate_rerun_finishes_at_once(tmp_path, reference):
    bindir = install_fakes(tmp_path / "bin")
    path = write_study(tmp_path, study_data(tmp_path, scores={}, env={"FAKE_SLEEP": "30"}))
    out = tmp_path / "out"
    first = subprocess.Popen(cli_command(bindir, "study", "run", str(path)), start_new_session=False)
    _wait_for(lambda: _eval_started(out), "the first evaluation")
    first.send_signal(signal.SIGKILL)  # the terminal is gone: no cleanup at all
    assert first.wait() == -signal.SIGKILL
    # the rerun does not wait for a heartbeat to go stale: the recorded worker is dead, the job runs now
    fast = write_study(tmp_path, study_data(tmp_path, scores={}))
    t0 = time.time()
    res = subprocess.run(cli_command(bindir, "study", "run", str(fast)), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert time.time() - t0 < 60 and "fresh heartbeat" not in res.stdout
    assert "stopped pid" in "".join(p.read_text() for p in (out / "jobs").glob("*/log.txt"))  # the stray program
    assert not S.duplicates(out)
    for d in (out / "jobs").iterdir():  # the interrupted attempt is not a failure
        assert S.failures(S.attempts(d)) == 0 and S.attempts(d)[-1]["outcome"] == "ok"
    _same_board(_leaderboard(fast), reference)


@pytest.mark.slow
def test_sigterm_is_an_interruption_not_a_failure(tmp_path, reference):
    """`max_attempts: 1` (the demo's setting): a run stopped by SIGTERM leaves the job interrupted, and the
    next run runs it without --retry-failed."""
    bindir = install_fakes(tmp_path / "bin")
    one = {"type": "local", "gpus": "none", "max_attempts": 1}
    path = write_study(tmp_path, study_data(tmp_path, scores={}, env={"FAKE_SLEEP": "30"}, executor=one))
    out = tmp_path / "out"
    run = subprocess.Popen(cli_command(bindir, "study", "run", str(path)), stdout=subprocess.PIPE, text=True)
    _wait_for(lambda: _eval_started(out), "the first evaluation")
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGTERM
    (job,) = [d for d in (out / "jobs").iterdir() if (d / "attempts.json").exists()]
    last = S.attempts(job)[-1]
    assert last["outcome"] == "interrupted" and "SIGTERM" in last["last_line"] and S.failures(S.attempts(job)) == 0
    assert not (out / "done").exists() and not (job / "running.json").exists()
    study = load_study(path)
    from lmms_ac.study.status import compute_status, render_status

    st = compute_status(study)
    assert st.counts["interrupted"] == 2 and "the next `lmms-ac study run FILE` resumes them" in render_status(
        st, study
    )
    fast = write_study(tmp_path, study_data(tmp_path, scores={}, executor=one))
    res = subprocess.run(cli_command(bindir, "study", "run", str(fast)), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the limit" not in res.stdout
    _same_board(_leaderboard(fast), reference)


@pytest.mark.slow
def test_two_study_runs_at_once_do_not_fight(tmp_path, reference):
    bindir = install_fakes(tmp_path / "bin")
    path = write_study(tmp_path, study_data(tmp_path, scores={}, env={"FAKE_SLEEP": "3"}))
    out = tmp_path / "out"
    cmd = cli_command(bindir, "study", "run", str(path))
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: _eval_started(out), "the first evaluation")
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out1, _ = first.communicate(timeout=300)
    out2, _ = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, out1 + out2
    assert f"waiting for `study run` pid {first.pid}" in out2 and "0 pending" in out2  # it found nothing left
    assert "stopped pid" not in "".join(p.read_text() for p in (out / "jobs").glob("*/log*.txt"))
    for d in (out / "jobs").iterdir():
        assert len(S.attempts(d)) == 1  # each job ran once
    assert not S.duplicates(out)
    _same_board(_leaderboard(path), reference)


def test_done_is_written_once_and_a_late_duplicate_is_kept_and_shown(tmp_path):
    from lmms_ac.study.status import compute_status, render_status

    study = parse_study(study_data(tmp_path, scores={}), tmp_path)
    from lmms_ac.study.progress import progress

    unit = progress(study).plan.units[0]
    path = S.done_path(study.output_dir, unit.unit_id, "eval")
    first = {"results": {}, "lmms_ac_study": {"unit_id": unit.unit_id, "job_id": "j1"}}
    assert S.claim_done(path, first) is None
    before = path.stat()
    dup = S.claim_done(path, {"results": {}, "lmms_ac_study": {"unit_id": unit.unit_id, "job_id": "j2"}})
    assert dup is not None and dup.parent == path.parent and dup.name.startswith(path.name[:-5] + ".duplicate-")
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert S.read_json(path)["lmms_ac_study"]["job_id"] == "j1" and S.read_json(dup)["lmms_ac_study"]["job_id"] == "j2"
    assert not dup.name.endswith("_results.json")  # `lmms-ac collect done/` does not read it as a result
    assert not list(path.parent.glob(".*.tmp"))
    st = compute_status(study)
    assert st.duplicates == [dup] and st.counts["done"] == 1
    assert "late duplicates (1)" in render_status(st, study) and str(dup) in render_status(st, study)


def test_slurm_without_a_cluster_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from lmms_ac.study.runner import execute

    monkeypatch.setattr("lmms_ac.study.slurm.sbatch_available", lambda: False)
    monkeypatch.setattr("lmms_ac.study.slurm_queue.squeue", lambda: None)
    study = parse_study(study_data(tmp_path, scores={}, executor={"type": "slurm"}), tmp_path)
    with pytest.raises(ValueError, match=r"needs SLURM's sbatch.*login node, or set executor.type: local"):
        execute(study, printer=_quiet)


def test_sbatch_refusing_the_array_is_a_clear_error(tmp_path, monkeypatch):
    from lmms_ac.study.runner import execute

    class Refusing:
        class SlurmExecutor:
            def __init__(self, folder, max_num_timeout=3):
                pass

            def update_parameters(self, **kw):
                pass

            def submit_array(self, calls):
                raise RuntimeError("Could not submit\nsbatch: error: invalid partition specified: nope")

    monkeypatch.setitem(sys.modules, "submitit", Refusing)
    monkeypatch.setattr("lmms_ac.study.slurm.sbatch_available", lambda: True)
    study = parse_study(study_data(tmp_path, scores={}, executor={"type": "slurm"}), tmp_path)
    with pytest.raises(ValueError, match=r"sbatch refused .*invalid partition specified: nope; check that the clu"):
        execute(study, printer=_quiet)


@pytest.mark.slow
def test_a_failed_model_is_named_by_status_and_on_the_report_page(tmp_path):
    bindir = install_fakes(tmp_path / "bin")
    data = study_data(
        tmp_path,
        scores={},
        env={"FAKE_FAIL_VARIANT": "b"},
        report={"outputs": ["table", "leaderboard", "html"], "recommend_benchmark": "mme"},
    )
    path = write_study(tmp_path, data)
    res = subprocess.run(cli_command(bindir, "study", "run", str(path)), capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    status = subprocess.run(cli_command(bindir, "study", "status", str(path)), capture_output=True, text=True)
    assert "b mme, seed: exited 0 but wrote no results" in status.stdout
    report = subprocess.run(cli_command(bindir, "study", "report", str(path)), capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert "warning: b: mme, seed failed after 2 attempt(s)" in report.stdout
    page = (tmp_path / "out" / "report" / "report.html").read_text()
    assert "b: mme, seed failed after 2 attempt(s)" in page and "--retry-failed" in page


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True).returncode
        == 0
    )


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="mounting a tmpfs needs root on Linux")
def test_read_only_output_is_a_clear_error_and_status_still_reads_it(tmp_path):
    bindir = install_fakes(tmp_path / "bin")
    path = write_study(tmp_path, study_data(tmp_path, scores={}))
    out = tmp_path / "out"
    res = subprocess.run(cli_command(bindir, "study", "run", str(path)), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    before = done_files(out)
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "size=8m"):
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        subprocess.run(["cp", "-a", str(out), str(ro / "out")], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        ro_study = write_study(tmp_path, {**study_data(tmp_path, scores={}), "output": str(ro / "out")}, "ro.yaml")
        for cmd in ("run", "report"):
            res = subprocess.run(cli_command(bindir, "study", cmd, str(ro_study)), capture_output=True, text=True)
            assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
            assert "is not writable" in res.stderr
        status = subprocess.run(cli_command(bindir, "study", "status", str(ro_study)), capture_output=True, text=True)
        assert status.returncode == 0 and "4 done" in status.stdout, status.stdout + status.stderr
    finally:
        subprocess.run(["umount", str(ro)], check=False)
    assert done_files(out) == before


def test_status_and_report_only_read(tmp_path, monkeypatch):
    """`study status` and `study report` build no job (no argv, no environment) and write nothing outside
    the report folder."""
    from lmms_ac.study.report import build_study_report
    from lmms_ac.study.status import compute_status

    def no_jobs(*args, **kwargs):
        raise AssertionError("a read-only command built jobs")

    monkeypatch.setattr("lmms_ac.study.plan.make_jobs", no_jobs)
    monkeypatch.setattr("lmms_ac.study.runner.make_jobs", no_jobs)
    study = parse_study(study_data(tmp_path, scores={}), tmp_path)
    assert compute_status(study).counts["pending"] == 4
    assert not study.output_dir.exists()  # status wrote nothing
    summary = build_study_report(study, printer=_quiet)
    assert summary["units_done"] == 0 and "4 of 4 result(s) not done yet (4 pending)" in summary["problems"][0]
    assert sorted(p.name for p in study.output_dir.iterdir()) == ["report"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="mounting a tmpfs needs root on Linux")
def test_full_disk_is_a_clear_error_and_the_rerun_finishes(tmp_path, reference):
    bindir = install_fakes(tmp_path / "bin")
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=4m"):
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        path = write_study(tmp_path, {**study_data(tmp_path, scores={}), "output": str(disk / "out")})
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as fh:  # fill the disk to the last byte
            for size in (1 << 16, 1 << 10, 1):
                try:
                    while True:
                        fh.write(b"\0" * size)
                except OSError:
                    pass
        res = subprocess.run(cli_command(bindir, "study", "run", str(path)), capture_output=True, text=True)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stdout + res.stderr
        assert "No space left on device" in res.stderr and "free space" in res.stderr
        assert "lmms-ac study: error: cannot write the study output" in res.stderr
        filler.unlink()
        res = subprocess.run(cli_command(bindir, "study", "run", str(path)), capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
        _same_board(_leaderboard(path), reference)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
