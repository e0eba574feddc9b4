"""Where a study stands, read-only: which units are done, running, queued, interrupted, failed or pending.

``progress(study)`` reads the output folder (done files, job folders) and asks whether recorded workers
and SLURM jobs are alive (``liveness``); it builds no job (no argv, no environment, no executor) and
writes nothing, so ``study status`` and ``study report`` work on a read-only output folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lmms_ac.study import state as S
from lmms_ac.study.liveness import QueueReader, cached_queue, job_liveness
from lmms_ac.study.plan import Plan, Unit, make_plan
from lmms_ac.study import slurm_queue as Q
from lmms_ac.study.spec import Study

UNIT_STATES = ("failed", "running", "interrupted", "queued", "pending", "done")


@dataclass
class JobState:
    job_id: str
    units: List[str]
    status: str  # done | running | queued | failed | interrupted | new
    attempts: int
    failures: int  # attempts that ran and failed (interruptions are not counted)
    last_line: str = ""
    duration_s: Optional[float] = None
    started: str = ""  # start of the last attempt
    why: str = ""  # what liveness found (running / queued jobs)


def job_state(job_dir: Path, out: Path, queue: QueueReader) -> Optional[JobState]:
    spec = S.read_json(job_dir / "job.json")
    if not isinstance(spec, dict) or not isinstance(spec.get("units"), list):
        return None
    units = [u["unit_id"] for u in spec["units"]]
    tries = S.attempts(job_dir)
    last = tries[-1] if tries else {}
    why = ""
    if all(S.unit_done(out, u["unit_id"], u["kind"]) for u in spec["units"]):
        status = "done"
    else:
        verdict = job_liveness(job_dir, queue)
        why = verdict.why
        if verdict.state == "running":
            status = "running"
        elif verdict.busy:  # queued, or SLURM does not answer now
            status = "queued"
        elif last.get("outcome") == "failed":
            status = "failed"
        elif last and (last.get("outcome") == "interrupted" or not last.get("end")):
            status = "interrupted"
        else:
            status = "new"
    return JobState(
        str(spec.get("job_id", job_dir.name)),
        units,
        status,
        len(tries),
        S.failures(tries),
        str(last.get("last_line", "")),
        last.get("duration_s"),
        str(last.get("start", "")),
        why,
    )


def all_job_states(out: Path, queue: Optional[QueueReader] = None) -> List[JobState]:
    root = out / "jobs"
    if not root.is_dir():
        return []
    queue = queue or cached_queue(Q.squeue)
    states = [job_state(d, out, queue) for d in sorted(root.iterdir()) if d.is_dir()]
    return [s for s in states if s is not None]


def measured_durations(states: Sequence[JobState], specs: Dict[str, Dict[str, Any]]) -> Dict[str, List[float]]:
    """Seconds per unit of finished jobs, by job kind (for cost estimates and ETAs)."""
    out: Dict[str, List[float]] = {}
    for s in states:
        spec = specs.get(s.job_id)
        if s.status == "done" and s.duration_s and spec and s.units:
            out.setdefault(spec["kind"], []).append(float(s.duration_s) / len(s.units))
    return out


@dataclass
class UnitProgress:
    state: str  # one of UNIT_STATES
    job: Optional[JobState] = None
    log: Optional[Path] = None


@dataclass
class Progress:
    plan: Plan
    done: List[Unit]
    pending: List[Unit]  # every unit not done (running, queued, failed... included)
    units: Dict[str, UnitProgress]
    jobs: List[JobState]
    duplicates: List[Path] = field(default_factory=list)

    def failed(self) -> List[Tuple[str, List[Unit], JobState, Path]]:
        """(entry, units, job, log) of each job whose attempts are used up."""
        by_log: Dict[Path, Tuple[str, List[Unit], JobState, Path]] = {}
        for u in self.plan.units:
            p = self.units[u.unit_id]
            if p.state == "failed" and p.job is not None and p.log is not None:
                by_log.setdefault(p.log, (u.entry, [], p.job, p.log))[1].append(u)
        return list(by_log.values())


def progress(study: Study, versions: Optional[Dict[str, Optional[str]]] = None) -> Progress:
    """The study's units and what became of each, from the output folder (read-only)."""
    out = study.output_dir
    plan = make_plan(study, versions)
    states = all_job_states(out)
    latest: Dict[str, JobState] = {}  # unit id -> state of the most recently attempted job holding it
    for st in states:
        for u in st.units:
            if u not in latest or st.started > latest[u].started:
                latest[u] = st
    limit = study.executor.max_attempts
    units: Dict[str, UnitProgress] = {}
    done: List[Unit] = []
    pending: List[Unit] = []
    for u in plan.units:
        if S.unit_done(out, u.unit_id, u.kind):
            units[u.unit_id] = UnitProgress("done")
            done.append(u)
            continue
        pending.append(u)
        js = latest.get(u.unit_id)
        if js is None:
            units[u.unit_id] = UnitProgress("pending")
            continue
        st = {"running": "running", "queued": "queued", "interrupted": "interrupted"}.get(js.status, "pending")
        if js.status == "failed" and js.failures >= limit:
            st = "failed"
        units[u.unit_id] = UnitProgress(st, js, out / "jobs" / js.job_id / "log.txt")
    return Progress(plan, done, pending, units, states, S.duplicates(out))
