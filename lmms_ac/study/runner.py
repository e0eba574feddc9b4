"""From a validated study to executed jobs: what is done, what to run, dry runs, the run record."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from lmms_ac.io import check_writable
from lmms_ac.study import state as S
from lmms_ac.study.liveness import QueueReader, cached_queue, job_liveness
from lmms_ac.study.lock import study_lock
from lmms_ac.study.progress import all_job_states, measured_durations
from lmms_ac.study import slurm_queue as Q
from lmms_ac.study.plan import Job, Plan, Unit, cwd_for, make_jobs, make_plan, shell_comment, shell_line
from lmms_ac.study.spec import Study

Printer = Callable[[str], None]


@dataclass
class Prepared:
    plan: Plan
    done: List[Unit]
    pending: List[Unit]
    jobs: List[Job]
    skipped: Dict[str, str] = field(default_factory=dict)  # job_id -> why it is not run now
    on_slurm: List[str] = field(default_factory=list)  # job ids queued or running on SLURM (watched, not resubmitted)


def prepare(study: Study, versions: Optional[Dict[str, Optional[str]]] = None) -> Prepared:
    """The plan, what is done, and the jobs for the rest (argv and environment built: run and dry runs only;
    ``progress.progress`` is the read-only view)."""
    out = study.output_dir
    plan = make_plan(study, versions)
    done = [u for u in plan.units if S.unit_done(out, u.unit_id, u.kind)]
    done_ids = {u.unit_id for u in done}
    pending = [u for u in plan.units if u.unit_id not in done_ids]
    jobs = make_jobs(plan, pending, out / "jobs")
    return Prepared(plan, done, pending, jobs)


def write_job(job: Job, out: Path) -> Path:
    job_dir = out / "jobs" / job.job_id
    doc = job.to_dict(job_dir)
    path = job_dir / "job.json"
    if S.read_json(path) != json.loads(json.dumps(doc, default=str)):
        S.write_json(path, doc)
    return job_dir


def runnable(prep: Prepared, retry_failed: bool = False, queue: Optional[QueueReader] = None) -> List[Job]:
    """Jobs to start now: not running (recorded worker alive) nor in the SLURM queue (nor unknowable because
    SLURM does not answer), and with attempts left (``retry_failed``: start over). Only attempts that ran
    and failed count; interruptions never do."""
    out = prep.plan.study.output_dir
    limit = prep.plan.study.executor.max_attempts
    queue = queue or cached_queue(Q.squeue)
    todo = []
    for job in prep.jobs:
        d = out / "jobs" / job.job_id
        verdict = job_liveness(d, queue)
        if verdict.busy:
            prep.skipped[job.job_id] = verdict.why
            if verdict.why.startswith("on SLURM"):
                prep.on_slurm.append(job.job_id)
            continue
        tries = S.attempts(d)
        failed = S.failures(tries)
        if failed >= limit:
            if not retry_failed:
                prep.skipped[job.job_id] = (
                    f"failed {failed} time(s), the limit (executor.max_attempts); "
                    "`study run --retry-failed` tries again"
                )
                continue
            os.replace(d / "attempts.json", d / f"attempts.reset{int(time.time())}.json")
        todo.append(job)
    return todo


def dry_run(prep: Prepared, folder: Optional[Path] = None) -> List[Path]:
    """Write the exact commands (and the sbatch script of the array for slurm) without running them."""
    study = prep.plan.study
    out = study.output_dir
    folder = folder or out / "dry-run"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "#!/usr/bin/env bash",
        shell_comment(
            f"study {study.name}: {len(prep.jobs)} job(s) for {len(prep.pending)} pending "
            f"unit(s); {len(prep.done)} unit(s) already done"
        ),
        "set -euo pipefail",
        shell_line(["cd", cwd_for(study)]),
    ]
    written = []
    for job in prep.jobs:
        spec = job.to_dict(out / "jobs" / job.job_id)
        S.write_json(folder / "jobs" / f"{job.job_id}.json", spec)
        units = ", ".join(u.task or u.score for u in job.units)
        lines += [
            "",
            shell_comment(f"job {job.job_id} ({job.kind}, {job.entry}): {units}"),
            shell_line(job.argv, job.env),
        ]
    path = folder / "commands.sh"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o755)
    written.append(path)
    if study.executor.type == "slurm" and prep.jobs:
        from lmms_ac.study.slurm import sbatch_script

        sb = folder / "sbatch_array.sh"
        sb.write_text(sbatch_script(study, out / "slurm" / "<time>", len(prep.jobs)), encoding="utf-8")
        written.append(sb)
    return written


def execute(
    study: Study,
    *,
    retry_failed: bool = False,
    runner=None,
    printer: Printer = print,
    versions: Optional[Dict[str, Optional[str]]] = None,
    wait: bool = True,
) -> int:
    """Run every pending job with the study's executor. 0 when the whole study is done afterwards.
    One run at a time per study (``lock``); a second waits for the first, then does what is left."""
    out = study.output_dir
    check_writable(out, directory=True, what="study output folder")
    out.mkdir(parents=True, exist_ok=True)
    with study_lock(out, printer):
        return _execute(study, retry_failed, runner, printer, versions, wait)


def _execute(study: Study, retry_failed: bool, runner, printer: Printer, versions, wait: bool) -> int:
    out = study.output_dir
    prep = prepare(study, versions)
    for note in prep.plan.notes:
        printer(f"note: {note}")
    todo = runnable(prep, retry_failed)
    printer(
        f"study {study.name}: {len(prep.plan.units)} unit(s), {len(prep.done)} done, {len(prep.pending)} pending "
        f"-> {len(todo)} job(s) to run on the {study.executor.type} executor"
    )
    for job_id, why in prep.skipped.items():
        printer(f"  skip {job_id}: {why}")
    dirs = [write_job(j, out) for j in todo]
    watch = [out / "jobs" / j for j in prep.on_slurm] if wait and study.executor.type == "slurm" else []
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    submitted: Dict[str, str] = {}
    if not dirs and not watch:
        results: Dict[str, Dict] = {}
    elif study.executor.type == "slurm":
        from lmms_ac.study.slurm import run_slurm

        if watch:
            printer(f"watching {len(watch)} job(s) already on SLURM (submitted by an earlier `study run`)")
        results = run_slurm(study, dirs, printer, on_submit=submitted.update, wait=wait, watch=watch)
    else:
        from lmms_ac.study.executors import run_local

        results = run_local(dirs, study.executor, runner, printer)
    after = prepare(study, versions)
    record = {
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "executor": study.executor.type,
        "jobs_run": sorted(j.job_id for j in todo),
        "jobs_watched": sorted(prep.on_slurm) if wait else [],
        "outcomes": results,
        "slurm_ids": submitted,
        "skipped": prep.skipped,
        "units_done_before": len(prep.done),
        "units_done_after": len(after.done),
        "units_total": len(after.plan.units),
    }
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S_%f")
    S.write_json(out / "runs" / f"{stamp}.json", record)
    if study.executor.type == "slurm" and not wait and todo:
        printer(
            f"submitted {len(todo)} job(s); follow them with `lmms-ac study status FILE --watch`; "
            "`study run` again waits for them and retries what failed"
        )
        return 0
    failed = [j for j, r in results.items() if not r.get("ok") and not r.get("interrupted") and not r.get("busy")]
    interrupted = [j for j, r in results.items() if r.get("interrupted") or r.get("busy")]
    printer(
        f"done: {len(after.done)}/{len(after.plan.units)} unit(s); "
        f"{sum(1 for r in results.values() if r.get('ok'))} job(s) succeeded, {len(failed)} failed"
        + (f" ({', '.join(failed)}; logs in {out / 'jobs'}/<job>/log*.txt)" if failed else "")
        + (f", {len(interrupted)} interrupted (run again to resume them)" if interrupted else "")
    )
    return 0 if not after.pending else 1


def last_run(out: Path) -> Optional[Dict]:
    runs = sorted((out / "runs").glob("*.json")) if (out / "runs").is_dir() else []
    return S.read_json(runs[-1]) if runs else None


def estimate_minutes(prep: Prepared, jobs: Optional[Sequence[Job]] = None) -> Dict[str, float]:
    """Estimated minutes per job (measured per-unit times of finished jobs of this study, else the
    file's ``estimate`` guesses)."""
    out = prep.plan.study.output_dir
    est = prep.plan.study.estimate
    states = all_job_states(out)
    specs = {s.job_id: S.read_json(out / "jobs" / s.job_id / "job.json") or {} for s in states}
    measured = measured_durations(states, specs)
    mins: Dict[str, float] = {}
    for job in jobs if jobs is not None else prep.jobs:
        per = measured.get(job.kind)
        unit_min = (sum(per) / len(per) / 60) if per else (est.eval_task_min if job.kind == "eval" else est.score_min)
        mins[job.job_id] = unit_min * len(job.units)
    return mins
