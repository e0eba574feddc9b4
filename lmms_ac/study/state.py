"""What is on disk in a study's output folder, and what it means.

Layout (``<output>/``):

- ``done/<unit_id>_results.json``  an lmms-eval results file holding ONE task, with
  ``lmms_ac_study: {unit_id, job_id, ...}``; written atomically after the job's results were read back;
- ``done/<unit_id>_score.json``    the score row of one A / C / C_ocr unit, same marker;
- ``jobs/<job_id>/job.json``       the job: units, exact argv and environment;
- ``jobs/<job_id>/log.txt``        output of the current/last attempt (``log.attempt<N>.txt``: earlier ones);
- ``jobs/<job_id>/running.json``   host, pid, the program's pid (``child_pid``), attempt, heartbeat (refreshed
  while the job runs; the next attempt on this host stops a program a killed worker left running);
- ``jobs/<job_id>/attempts.json``  one record per attempt: start, end, exit code, outcome, last log line;
- ``runs/<time>.json``             what each ``study run`` did (jobs run, outcomes).

A unit is done only when its ``done/`` file exists and carries its id; a job killed at any point
leaves no such file (running.json goes stale instead), so a rerun does it again.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from lmms_ac.io import atomic_write_text

HEARTBEAT_S = 15.0
STALE_S = 90.0  # a running.json whose heartbeat is older than this is an interrupted job


def done_path(out: Path, unit_id: str, kind: str) -> Path:
    return out / "done" / f"{unit_id}_{'results' if kind == 'eval' else 'score'}.json"


def read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path, doc: Any) -> Path:
    return atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n", overwrite=True)


def unit_done(out: Path, unit_id: str, kind: str) -> bool:
    doc = read_json(done_path(out, unit_id, kind))
    return isinstance(doc, dict) and (doc.get("lmms_ac_study") or {}).get("unit_id") == unit_id


def attempts(job_dir: Path) -> List[Dict[str, Any]]:
    doc = read_json(job_dir / "attempts.json")
    return doc if isinstance(doc, list) else []


def running_info(job_dir: Path, now: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """The running marker when its heartbeat is fresh, else None."""
    doc = read_json(job_dir / "running.json")
    if not isinstance(doc, dict):
        return None
    now = time.time() if now is None else now
    return doc if now - float(doc.get("heartbeat", 0)) < STALE_S else None


@dataclass
class JobState:
    job_id: str
    units: List[str]
    status: str  # done | running | failed | interrupted | new
    attempts: int
    last_line: str = ""
    duration_s: Optional[float] = None


def job_state(job_dir: Path, out: Path) -> Optional[JobState]:
    spec = read_json(job_dir / "job.json")
    if not isinstance(spec, dict):
        return None
    units = [u["unit_id"] for u in spec.get("units", [])]
    tries = attempts(job_dir)
    last = tries[-1] if tries else {}
    if all(unit_done(out, u["unit_id"], u["kind"]) for u in spec.get("units", [])):
        status = "done"
    elif running_info(job_dir):
        status = "running"
    elif last.get("outcome") == "failed":
        status = "failed"
    elif last and not last.get("end"):
        status = "interrupted"
    else:
        status = "new"
    return JobState(spec["job_id"], units, status, len(tries), str(last.get("last_line", "")), last.get("duration_s"))


def all_job_states(out: Path) -> List[JobState]:
    root = out / "jobs"
    if not root.is_dir():
        return []
    states = [job_state(d, out) for d in sorted(root.iterdir()) if d.is_dir()]
    return [s for s in states if s is not None]


def last_log_line(path: Path, max_bytes: int = 20000) -> str:
    """The last non-empty line of a log (ANSI colour codes and progress-bar carriage returns removed)."""
    import re

    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    lines = [ln.split("\r")[-1].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1][:300] if lines else ""


def host() -> str:
    return socket.gethostname()


def measured_durations(states: Sequence[JobState], specs: Dict[str, Dict[str, Any]]) -> Dict[str, List[float]]:
    """Seconds per unit of finished jobs, by job kind (for cost estimates and ETAs)."""
    out: Dict[str, List[float]] = {}
    for s in states:
        spec = specs.get(s.job_id)
        if s.status == "done" and s.duration_s and spec and s.units:
            out.setdefault(spec["kind"], []).append(float(s.duration_s) / len(s.units))
    return out
