"""Is a job running? Decided from facts, not from the age of a heartbeat.

A worker is identified by host, pid and the process's start time (``/proc/<pid>/stat`` field 22 with
the boot id, so neither a recycled pid nor a reboot is mistaken for it). A SLURM job is identified by
its id *and* the name of its submission (``lmms-ac-<study>-<token>``, unique per submission), so a job
id that SLURM hands out again after a controller restart is never taken for ours. Only a worker on
another host without a SLURM job to ask about falls back to the heartbeat's age.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from lmms_ac.study import state as S
from lmms_ac.study import slurm_queue as Q
from lmms_ac.study.slurm_queue import Queue, QueueEntry

QueueReader = Callable[[], Optional[Queue]]


def host() -> str:
    return socket.gethostname()


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def process_start(pid: int) -> Optional[str]:
    """``<boot id>:<start time in clock ticks>`` of a running process, None when there is none."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text(encoding="ascii", errors="replace")
    except (OSError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
    if len(fields) < 20 or fields[0] == "Z":  # a zombie has exited
        return None
    return f"{boot_id()}:{fields[19]}"


def identity(pid: Optional[int] = None) -> Dict[str, Any]:
    """Who runs a job: host, pid and start time of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    return {"host": host(), "pid": pid, "pid_start": process_start(pid)}


def alive(pid: Any, start: Any) -> bool:
    """Process ``pid`` on this host is the one that started at ``start`` and still runs."""
    return isinstance(pid, int) and isinstance(start, str) and bool(start) and process_start(pid) == start


@dataclass(frozen=True)
class Verdict:
    state: str  # running | queued | unknown | gone
    why: str = ""

    @property
    def busy(self) -> bool:
        """Running, queued, or not knowable now: never start it again meanwhile."""
        return self.state != "gone"


def cached_queue(reader: QueueReader) -> QueueReader:
    """``reader`` called at most once (one ``squeue`` per pass over the jobs)."""
    memo: Dict[str, Optional[Queue]] = {}

    def read() -> Optional[Queue]:
        if "q" not in memo:
            memo["q"] = reader()
        return memo["q"]

    return read


def slurm_submissions(job_dir: Path) -> Dict[str, Optional[str]]:
    """SLURM id -> submission name of a job folder's last submission (slurm.json) and of its last worker."""
    subs: Dict[str, Optional[str]] = {}
    for doc in (S.read_json(job_dir / "slurm.json"), S.read_json(job_dir / "running.json")):
        if isinstance(doc, dict):
            sid = doc.get("slurm_job_id") or doc.get("slurm_id")
            if sid:
                subs[str(sid)] = doc.get("slurm_name")
    return subs


def find(queue: Queue, slurm_id: str, name: Optional[str]) -> Optional[QueueEntry]:
    """The queue entry of our submission: the id alone is not enough (ids are reused after a restart)."""
    entry = queue.get(str(slurm_id))
    if entry is None or (name and entry.name != name):
        return None
    return entry


def job_liveness(job_dir: Path, queue: QueueReader, now: Optional[float] = None) -> Verdict:
    """Whether the job in ``job_dir`` runs (or waits in the SLURM queue) now."""
    info = S.read_json(job_dir / "running.json")
    info = info if isinstance(info, dict) else None
    here = bool(info) and info.get("host") == host()
    worker_alive = here and alive(info.get("pid"), info.get("pid_start"))
    subs = slurm_submissions(job_dir)
    q = queue() if subs else None
    if subs and q is not None:  # SLURM first: its jobs are watched by the runner, not only skipped
        for sid, name in subs.items():
            entry = find(q, sid, name)
            # a requeued job can drop out of one squeue listing: the controller's record says it is still there
            state = entry.state if entry is not None else Q.controller_state(sid, name, None)
            if state is not None and (entry is not None or state in Q.ALIVE_STATES):
                return Verdict("queued" if state == "PENDING" else "running", f"on SLURM as {sid} ({state})")
    if worker_alive:
        return Verdict("running", f"running in pid {info['pid']} on this host (attempt {info.get('attempt')})")
    if here and "pid_start" not in info and S.heartbeat_fresh(info, now):  # written by an older lmms-ac
        return Verdict("running", "running (fresh heartbeat of an older worker record)")
    if subs and q is None and Q.client_available():
        return Verdict("unknown", "SLURM does not answer (squeue); not started again until it does")
    if subs and q is not None:
        return Verdict("gone")
    # no SLURM client here (the folder was copied, or the executor changed): only the heartbeat can tell
    if info and not here and S.heartbeat_fresh(info, now):
        return Verdict("running", f"running on {info.get('host')} (fresh heartbeat; no SLURM job to ask about)")
    return Verdict("gone")


def wait_for_exit(pid: int, start: str, timeout_s: float) -> bool:
    """Wait until the process has exited; True when it has."""
    deadline = time.time() + timeout_s
    while alive(pid, start):
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True
