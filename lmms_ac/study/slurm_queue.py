"""What SLURM says about our jobs: the queue (squeue); for a job missing from it, the controller's own record
(``scontrol show job``, kept for ``MinJobAge`` after the end, 300 s by default), which says at once whether
it is really gone (a requeued job can drop out of one ``squeue`` listing) and how it ended; and the
accounting record (sacct) for jobs the controller has forgotten. sacct can lag the controller by seconds,
so a job cancelled a moment ago may have no record yet. Each job is matched by id *and* submission name, and
a record also by its submit time, so a job id reused after a controller restart (ids restart at 1 while the
accounting database keeps the old records) is never read as ours. No submitit here: its poll trusts sacct by
id alone.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

SUBMIT_SLACK_S = 120.0  # clock difference allowed between this host and the controller
# controller states of a job that is still queued or running (it may come back to the queue)
ALIVE_STATES = frozenset(
    {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
     "SUSPENDED", "STAGE_OUT", "SIGNALING", "STOPPED", "SPECIAL_EXIT", "RESV_DEL_HOLD", "POWER_UP_NODE"}
)  # fmt: skip


@dataclass(frozen=True)
class QueueEntry:
    job_id: str  # <array>_<task> for an array element
    name: str
    state: str  # PENDING, RUNNING, COMPLETING, REQUEUED, ...


Queue = Dict[str, QueueEntry]


def _run(argv: List[str], timeout: float = 30) -> Optional[str]:
    if not shutil.which(argv[0]):
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def client_available() -> bool:
    """Whether this machine has SLURM's client at all (else no SLURM job can be asked about from here)."""
    return shutil.which("squeue") is not None


def squeue() -> Optional[Queue]:
    """Every job in the queue (array elements one by one); None when SLURM does not answer."""
    text = _run(["squeue", "-h", "-r", "-o", "%i|%j|%T"])
    if text is None:
        return None
    queue: Queue = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            queue[parts[0]] = QueueEntry(parts[0], parts[1], parts[2])
    return queue


def _epoch(stamp: str) -> Optional[float]:
    try:
        return time.mktime(time.strptime(stamp.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def accounting_state(slurm_id: str, name: Optional[str], submitted: Optional[float]) -> Optional[str]:
    """The final state (``CANCELLED``, ``NODE_FAIL``, ``TIMEOUT``, ...) of our submission of ``slurm_id``,
    or None when sacct has no record that is ours (none kept, or only another job's under a reused id)."""
    text = _run(["sacct", "-n", "-P", "-X", "--duplicates", "-j", str(slurm_id), "-o", "JobID,JobName,State,Submit"])
    if text is None:
        return None
    best = None
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4 or parts[0] != str(slurm_id):
            continue
        if name and parts[1] != name:
            continue
        at = _epoch(parts[3])
        if submitted is not None and at is not None and at < submitted - SUBMIT_SLACK_S:
            continue  # an older job that had this id before the controller restarted
        if best is None or (at or 0) >= best[0]:
            best = (at or 0, parts[2].split()[0])
    return best[1] if best else None


def _fields(line: str) -> Dict[str, str]:
    return dict(item.split("=", 1) for item in line.split() if "=" in item)


def controller_state(slurm_id: str, name: Optional[str], submitted: Optional[float]) -> Optional[str]:
    """The controller's state of our submission of ``slurm_id`` (``PENDING``, ``RUNNING``, ``CANCELLED``, ...),
    or None when the controller has no record that is ours (forgotten after MinJobAge, or another job's)."""
    text = _run(["scontrol", "-o", "show", "job", str(slurm_id)])
    if text is None:
        return None
    for line in text.splitlines():
        fields = _fields(line)
        if name and fields.get("JobName") != name:
            continue
        at = _epoch(fields.get("SubmitTime", ""))
        if submitted is not None and at is not None and at < submitted - SUBMIT_SLACK_S:
            continue
        state = fields.get("JobState")
        if state:
            return state
    return None


def final_state(slurm_id: str, name: Optional[str], submitted: Optional[float]) -> Optional[str]:
    """How our submission of ``slurm_id`` ended: the controller's record while it keeps one, else sacct's."""
    state = controller_state(slurm_id, name, submitted)
    if state and state not in ALIVE_STATES:
        return state
    return accounting_state(slurm_id, name, submitted)
