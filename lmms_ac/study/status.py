"""``study status``: model x benchmark/probe/score table of done, running, failed and pending work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lmms_ac.study import state as S
from lmms_ac.study.runner import prepare
from lmms_ac.study.spec import Study

ORDER = ("failed", "running", "interrupted", "queued", "pending", "done")


@dataclass
class StudyStatus:
    rows: List[str]
    columns: List[str]
    cells: Dict[Tuple[str, str], Dict[str, int]]  # (entry, column) -> status -> count
    counts: Dict[str, int]
    failures: List[Tuple[str, str, str, str]]  # entry, columns, last log line, log path (one per failed job)
    eta_s: Optional[float]
    parallel: int


def _unit_jobs(out: Path) -> Dict[str, Tuple[S.JobState, Path]]:
    """unit id -> state of the most recently attempted job holding it."""
    latest: Dict[str, Tuple[S.JobState, Path, str]] = {}
    for st in S.all_job_states(out):
        d = out / "jobs" / st.job_id
        tries = S.attempts(d)
        when = tries[-1].get("start", "") if tries else ""
        for u in st.units:
            if u not in latest or when > latest[u][2]:
                latest[u] = (st, d, when)
    return {u: (st, d) for u, (st, d, _) in latest.items()}


def _parallel(study: Study) -> int:
    if study.executor.type == "slurm":
        return study.executor.slurm.array_parallelism
    from lmms_ac.study.executors import gpu_slots

    try:
        return len(gpu_slots(study.executor))
    except ValueError:
        return 1


def compute_status(study: Study, versions=None) -> StudyStatus:
    out = study.output_dir
    prep = prepare(study, versions)
    done = {u.unit_id for u in prep.done}
    jobs = _unit_jobs(out)
    queued_ids = None
    rows = list(dict.fromkeys(u.entry for u in prep.plan.units))
    columns = list(dict.fromkeys(u.column for u in prep.plan.units))
    cells: Dict[Tuple[str, str], Dict[str, int]] = {}
    counts = {k: 0 for k in ORDER}
    failed_jobs: Dict[str, Tuple[str, List[str], str]] = {}  # log -> entry, columns, last line
    failed_ids = set()
    limit = study.executor.max_attempts
    for u in prep.plan.units:
        if u.unit_id in done:
            st = "done"
        elif u.unit_id in jobs:
            js, d = jobs[u.unit_id]
            if js.status == "running":
                st = "running"
            elif js.status == "failed":
                st = "failed" if js.attempts >= limit else "pending"
                if st == "failed":
                    failed_jobs.setdefault(str(d / "log.txt"), (u.entry, [], js.last_line))[1].append(u.column)
            elif js.status == "interrupted":
                st = "interrupted"
            else:
                slurm = S.read_json(d / "slurm.json")
                if slurm and queued_ids is None:
                    from lmms_ac.study.slurm import squeue_ids

                    queued_ids = squeue_ids() or set()
                st = "queued" if slurm and str(slurm.get("slurm_job_id")) in (queued_ids or set()) else "pending"
        else:
            st = "pending"
        counts[st] += 1
        if st == "failed":
            failed_ids.add(u.unit_id)
        cell = cells.setdefault((u.entry, u.column), {})
        cell[st] = cell.get(st, 0) + 1
    # ETA: remaining units x measured seconds per unit of their kind / parallel slots
    states = S.all_job_states(out)
    specs = {s.job_id: S.read_json(out / "jobs" / s.job_id / "job.json") or {} for s in states}
    measured = S.measured_durations(states, specs)
    eta: Optional[float] = None
    remaining = [u for u in prep.plan.units if u.unit_id not in done and u.unit_id not in failed_ids]
    if measured and remaining:
        kinds = {"eval": measured.get("eval"), "score": measured.get("score-a", []) + measured.get("score-c", [])}
        per = {k: (sum(v) / len(v) if v else None) for k, v in kinds.items()}
        fallback = next(v for v in per.values() if v is not None)
        eta = sum(per.get(u.kind) or fallback for u in remaining) / max(1, _parallel(study))
    elif not remaining:
        eta = 0.0
    failures = [(entry, ", ".join(dict.fromkeys(cols)), last, log) for log, (entry, cols, last) in failed_jobs.items()]
    return StudyStatus(rows, columns, cells, counts, failures, eta, _parallel(study))


def _cell_text(cell: Dict[str, int]) -> str:
    n, d = sum(cell.values()), cell.get("done", 0)
    if d == n:
        return "done" if n == 1 else f"done ({n})"
    top = next(k for k in ORDER if cell.get(k))
    return top if n == 1 else f"{d}/{n} done, {top}"


def _fmt_eta(s: Optional[float]) -> str:
    if s == 0:
        return "nothing left to run"
    if s is None:
        return "unknown (no finished job yet)"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def render_status(status: StudyStatus, study: Study) -> str:
    header = ["model"] + status.columns
    body = [
        [r] + [(_cell_text(status.cells[(r, c)]) if (r, c) in status.cells else "-") for c in status.columns]
        for r in status.rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = [
        f"study {study.name}  ({study.output_dir})  {datetime.now(timezone.utc).strftime('%H:%M:%S')} UTC",
        "",
        "  ".join(h.ljust(w) for h, w in zip(header, widths)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in body]
    total = sum(status.counts.values())
    lines += [
        "",
        "units: " + ", ".join(f"{status.counts[k]} {k}" for k in ORDER if status.counts[k]) + f" (of {total})",
        f"ETA: {_fmt_eta(status.eta_s)}" + (f" at {status.parallel} job(s) in parallel" if status.eta_s else ""),
    ]
    if status.failures:
        lines += ["", "failed (attempts used up; `lmms-ac study run FILE --retry-failed` tries again):"]
        for entry, col, last, log in status.failures:
            lines.append(f"  {entry} {col}: {last}\n    log: {log}")
    return "\n".join(lines) + "\n"
