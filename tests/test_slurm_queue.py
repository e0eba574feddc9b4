"""What the runner reads from SLURM for a job missing from squeue: the controller's own record (scontrol) first,
matched by submission name and submit time, then sacct, which can lag the controller by seconds. Fake client
binaries stand in for a cluster (the real-cluster tests are in test_study_slurm*.py)."""

from __future__ import annotations

import os
import stat
import time

import pytest

from lmms_ac.study import slurm_queue as Q

pytestmark = pytest.mark.slow  # each test starts the fake client binaries

NAME = "lmms-ac-tiny-1234abcd"


def now() -> str:
    """The controller's time format, now (the submit time a fresh job shows)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


def _client(tmp_path, monkeypatch, scontrol: str = "", sacct: str = ""):
    """Fake `scontrol` and `sacct` printing the given lines (empty: exit 1, as for an unknown job)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, text in (("scontrol", scontrol), ("sacct", sacct)):
        path = bindir / name
        body = f"cat <<'OUT'\n{text}\nOUT\n" if text else "exit 1\n"
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def _line(state: str, name: str = NAME, submit: str = "") -> str:
    submit = submit or now()
    return (f"JobId=12 ArrayJobId=10 ArrayTaskId=0 JobName={name} UserId=root(0) JobState={state} "
            f"Reason=None SubmitTime={submit} Partition=debug")  # fmt: skip


def test_the_controller_says_a_requeued_job_is_still_ours(tmp_path, monkeypatch):
    _client(tmp_path, monkeypatch, scontrol=_line("PENDING"))
    assert Q.controller_state("10_0", NAME, time.time()) in Q.ALIVE_STATES


def test_a_cancellation_is_read_from_the_controller_before_sacct_has_it(tmp_path, monkeypatch):
    _client(tmp_path, monkeypatch, scontrol=_line("CANCELLED"))  # sacct: no record yet
    assert Q.accounting_state("10_0", NAME, time.time()) is None
    assert Q.final_state("10_0", NAME, time.time()) == "CANCELLED"


@pytest.mark.parametrize(
    "line",
    [_line("CANCELLED", name="lmms-ac-other-00000000"), _line("CANCELLED", submit="2020-01-01T00:00:00")],
    ids=["another-submission", "an-older-job-under-a-reused-id"],
)
def test_another_jobs_record_is_not_ours(tmp_path, monkeypatch, line):
    _client(tmp_path, monkeypatch, scontrol=line, sacct=f"10_0|{NAME}|NODE_FAIL|{now()}")
    assert Q.controller_state("10_0", NAME, time.time()) is None
    assert Q.final_state("10_0", NAME, time.time()) == "NODE_FAIL"  # from sacct, matched by name and time


def test_a_forgotten_job_is_read_from_sacct(tmp_path, monkeypatch):
    _client(tmp_path, monkeypatch, sacct=f"10_0|{NAME}|CANCELLED by 0|{now()}")
    assert Q.controller_state("10_0", NAME, time.time()) is None
    assert Q.final_state("10_0", NAME, time.time()) == "CANCELLED"
