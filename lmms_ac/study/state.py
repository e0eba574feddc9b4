"""What is on disk in a study's output folder, and what it means.

Layout (``<output>/``):

- ``done/<unit_id>_results.json``  an lmms-eval results file holding ONE task, with
  ``lmms_ac_study: {unit_id, job_id, ...}``; written atomically after the job's results were read back;
- ``done/<unit_id>_score.json``    the score row of one A / C / C_ocr unit, same marker;
- ``jobs/<job_id>/job.json``       the job: units, exact argv and environment;
- ``jobs/<job_id>/log.txt``        output of the current/last attempt (``log.attempt<N>.txt``: earlier ones);
- ``done/<unit_id>_<kind>.duplicate-<time>.json``  a late second result of a done unit (kept, never
  written over the first; ``study status`` lists them);
- ``jobs/<job_id>/job.json``       the job: units, exact argv and environment;
- ``jobs/<job_id>/log.txt``        output of the current/last attempt (``log.attempt<N>.txt``: earlier ones);
- ``jobs/<job_id>/running.json``   the worker (host, pid, process start time), the program (``child_pid``,
  ``child_start``), attempt, SLURM id and submission name, heartbeat (see ``liveness``);
- ``jobs/<job_id>/slurm.json``     the last SLURM submission: id, submission name, submit time;
- ``jobs/<job_id>/attempts.json``  one record per attempt: start, end, exit code, outcome (ok, failed,
  interrupted), last log line; only ``failed`` counts against ``executor.max_attempts``;
- ``runs/<time>.json``             what each ``study run`` did (jobs run, outcomes).

A unit is done only when its ``done/`` file exists and carries its id; a job killed at any point
leaves no such file, so a rerun does it again.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from lmms_ac.io import atomic_write_text, current_umask

HEARTBEAT_S = 15.0
STALE_S = 90.0  # fallback only (a worker on another host with no SLURM job to ask): older is interrupted


def done_path(out: Path, unit_id: str, kind: str) -> Path:
    return out / "done" / f"{unit_id}_{'results' if kind == 'eval' else 'score'}.json"


def read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_json(path: Path, doc: Any) -> Path:
    return atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n", overwrite=True)


def claim_done(path: Path, doc: Any) -> Optional[Path]:
    """Write the done file ``path`` only if it does not exist yet (atomic: hard link of a complete temp
    file). Returns None when written, else the path of the late duplicate kept beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        try:
            os.link(tmp, path)  # fails if a result is there already: done is written once
            return None
        except FileExistsError:
            pass
        except OSError as err:  # a filesystem without hard links: exclusive create, then the content
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            try:
                with open(path, "x", encoding="utf-8") as fh:
                    fh.write(text)
                return None
            except FileExistsError:
                pass
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S_%f")
        dup = path.with_name(f"{path.name[: -len('.json')]}.duplicate-{stamp}.json")
        os.replace(tmp, dup)
        return dup
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def duplicates(out: Path) -> List[Path]:
    """Late results of done units kept beside their done files."""
    root = out / "done"
    return sorted(root.glob("*.duplicate-*.json")) if root.is_dir() else []


def unit_done(out: Path, unit_id: str, kind: str) -> bool:
    doc = read_json(done_path(out, unit_id, kind))
    return isinstance(doc, dict) and (doc.get("lmms_ac_study") or {}).get("unit_id") == unit_id


def attempts(job_dir: Path) -> List[Dict[str, Any]]:
    doc = read_json(job_dir / "attempts.json")
    return doc if isinstance(doc, list) else []


def failures(tries: List[Dict[str, Any]]) -> int:
    """Attempts that ran and failed (interruptions do not count against ``executor.max_attempts``)."""
    return sum(1 for t in tries if t.get("outcome") == "failed")


def heartbeat_fresh(info: Dict[str, Any], now: Optional[float] = None) -> bool:
    now = time.time() if now is None else now
    try:
        return now - float(info.get("heartbeat", 0)) < STALE_S
    except (TypeError, ValueError):
        return False


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
