"""``study status``: model x benchmark/probe/score table of done, running, failed and pending work."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lmms_ac.study import state as S
from lmms_ac.study.progress import UNIT_STATES, Progress, measured_durations, progress
from lmms_ac.study.spec import Study

ORDER = UNIT_STATES


@dataclass
class StudyStatus:
    rows: List[str]
    columns: List[str]
    cells: Dict[Tuple[str, str], Dict[str, int]]  # (entry, column) -> status -> count
    counts: Dict[str, int]
    failures: List[Tuple[str, str, str, str]]  # entry, columns, last log line, log path (one per failed job)
    eta_s: Optional[float]
    parallel: int
    duplicates: List[Path] = field(default_factory=list)  # late results kept beside done files


def _parallel(study: Study) -> int:
    if study.executor.type == "slurm":
        return study.executor.slurm.array_parallelism
    from lmms_ac.study.executors import gpu_slots

    try:
        return len(gpu_slots(study.executor))
    except ValueError:
        return 1


def failure_lines(prog: Progress) -> List[Tuple[str, str, str, str]]:
    """(entry, columns, last log line, log) of each job whose attempts are used up."""
    return [
        (entry, ", ".join(dict.fromkeys(u.column for u in units)), job.last_line, str(log))
        for entry, units, job, log in prog.failed()
    ]


def compute_status(study: Study, versions=None) -> StudyStatus:
    out = study.output_dir
    prog = progress(study, versions)
    rows = list(dict.fromkeys(u.entry for u in prog.plan.units))
    columns = list(dict.fromkeys(u.column for u in prog.plan.units))
    cells: Dict[Tuple[str, str], Dict[str, int]] = {}
    counts = {k: 0 for k in ORDER}
    for u in prog.plan.units:
        st = prog.units[u.unit_id].state
        counts[st] += 1
        cell = cells.setdefault((u.entry, u.column), {})
        cell[st] = cell.get(st, 0) + 1
    # ETA: remaining units x measured seconds per unit of their kind / parallel slots
    specs = {s.job_id: S.read_json(out / "jobs" / s.job_id / "job.json") or {} for s in prog.jobs}
    measured = measured_durations(prog.jobs, specs)
    eta: Optional[float] = None
    remaining = [u for u in prog.plan.units if prog.units[u.unit_id].state not in ("done", "failed")]
    if measured and remaining:
        kinds = {"eval": measured.get("eval"), "score": measured.get("score-a", []) + measured.get("score-c", [])}
        per = {k: (sum(v) / len(v) if v else None) for k, v in kinds.items()}
        fallback = next(v for v in per.values() if v is not None)
        eta = sum(per.get(u.kind) or fallback for u in remaining) / max(1, _parallel(study))
    elif not remaining:
        eta = 0.0
    return StudyStatus(rows, columns, cells, counts, failure_lines(prog), eta, _parallel(study), list(prog.duplicates))


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
    if status.counts.get("interrupted"):
        lines += [
            "",
            "interrupted (killed, cancelled, preempted or requeued): the next `lmms-ac study run FILE` resumes them",
            "  (interruptions do not count against executor.max_attempts)",
        ]
    if status.failures:
        lines += ["", "failed (attempts used up; `lmms-ac study run FILE --retry-failed` tries again):"]
        for entry, col, last, log in status.failures:
            lines.append(f"  {entry} {col}: {last}\n    log: {log}")
    if status.duplicates:
        lines += ["", f"late duplicates ({len(status.duplicates)}): a unit's result written again after it was done, "
                  "kept beside the done file (the first result counts):"]  # fmt: skip
        lines += [f"  {p}" for p in status.duplicates]
    return "\n".join(lines) + "\n"
