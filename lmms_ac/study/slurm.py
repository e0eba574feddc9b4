"""The ``slurm`` executor: job arrays through submitit (no hand-written sbatch templating), watched
through our own records, never through the scheduler's memory alone.

Every submission goes to a fresh submitit folder (``<output>/slurm/<time>``) under a name unique to it
(``lmms-ac-<study>-<token>``), recorded with the id and submit time in each job's ``slurm.json``. Each
array element calls ``worker.run_job`` on one job folder on the shared filesystem. The runner then
polls ``squeue`` (``executor.slurm.poll_s``): a job is running while its id *with its submission name*
is in the queue, or while the controller (``scontrol show job``) still holds it queued or running (a
requeued job can drop out of one listing); while SLURM does not answer (a restarting controller),
nothing is decided. A job that left the queue is settled from the worker's own records
(``attempts.json``): ok, or failed (resubmitted while ``executor.max_attempts`` allows), or interrupted,
for which the controller's record (else ``sacct``, which can lag it by seconds), matched by name and
submit time, tells a ``scancel`` (left for the next ``study run``) from a node failure or preemption
(resubmitted, not counted as a failure).
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from lmms_ac.study import state as S
from lmms_ac.study.liveness import find
from lmms_ac.study import slurm_queue as Q
from lmms_ac.study.spec import Study

Printer = Callable[[str], None]
MAX_INTERRUPTIONS = 3  # resubmissions per job and run after node failures / preemptions without requeue
COUNTED_STATES = ("TIMEOUT", "OUT_OF_MEMORY", "DEADLINE")  # the job ran out of what it asked for: a failure


class SubmititJob:
    """What submitit pickles: run one job folder; ``checkpoint`` requeues it (preemption, timeout)."""

    def __init__(self, job_dir: str, requeue: bool = True, slurm_name: Optional[str] = None):
        self.job_dir, self.requeue, self.slurm_name = job_dir, requeue, slurm_name

    def __call__(self) -> Dict[str, Any]:
        from lmms_ac.study.worker import run_job

        return run_job(self.job_dir, submission={"slurm_name": self.slurm_name})

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        if not self.requeue:
            return None
        import submitit

        return submitit.helpers.DelayedSubmission(SubmititJob(self.job_dir, self.requeue, self.slurm_name))


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise RuntimeError("the slurm executor needs submitit: pip install submitit") from None
    return submitit


def slurm_parameters(study: Study, name: Optional[str] = None) -> Dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters from ``executor.slurm`` (``name``: the submission's job name)."""
    s = study.executor.slurm
    params: Dict[str, Any] = {
        "job_name": name or f"lmms-ac-{study.name}",
        "time": s.time,
        "cpus_per_task": s.cpus_per_job,
        "array_parallelism": s.array_parallelism,
        "signal_delay_s": 120,
        "nodes": 1,
        "ntasks_per_node": 1,
    }
    if s.gpus_per_job:
        params["gpus_per_node"] = s.gpus_per_job
    for key, value in (
        ("partition", s.partition),
        ("account", s.account),
        ("qos", s.qos),
        ("constraint", s.constraint),
    ):
        if value:
            params[key] = value
    if s.mem_gb:
        params["mem"] = f"{int(s.mem_gb * 1024)}MB"
    if s.setup:
        params["setup"] = list(s.setup)
    if s.additional:
        params["additional_parameters"] = dict(s.additional)
    return params


def sbatch_script(study: Study, folder: Path, count: int) -> str:
    """The sbatch script submitit would write for an array of ``count`` jobs (for ``plan --dry-run``)."""
    _import_submitit()
    from submitit.slurm.slurm import _make_sbatch_string

    params = slurm_parameters(study)
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {folder}"
    return _make_sbatch_string(command=command, folder=str(folder), map_count=count, **params)


@dataclass
class Submission:
    """One array element of ours: the job folder, SLURM's id, the submission's name and submit time."""

    job_dir: Path
    slurm_id: str
    name: Optional[str]
    submitted: Optional[float]

    @classmethod
    def of(cls, job_dir: Path) -> Optional["Submission"]:
        doc = S.read_json(job_dir / "slurm.json")
        if not isinstance(doc, dict) or not doc.get("slurm_job_id"):
            return None
        return cls(job_dir, str(doc["slurm_job_id"]), doc.get("slurm_name"), doc.get("submitted"))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else str(text)[:300]


def sbatch_available() -> bool:
    return shutil.which("sbatch") is not None


def submit(study: Study, job_dirs: Sequence[Path], printer: Printer = print) -> List[Submission]:
    """Submit the jobs as one array under a new submission name; record each in its ``slurm.json``."""
    submitit = _import_submitit()
    if not sbatch_available():
        raise ValueError(
            "the slurm executor needs SLURM's sbatch, and there is none on PATH: run `lmms-ac study run` on the "
            "cluster's login node, or set executor.type: local"
        )
    out = study.output_dir
    ex = study.executor
    name = f"lmms-ac-{study.name}-{uuid.uuid4().hex[:8]}"
    folder = out / "slurm" / f"{datetime.now().strftime('%Y%m%d_%H%M%S_%f')}"
    executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=3)
    executor.update_parameters(**slurm_parameters(study, name))
    calls = [SubmititJob(str(d), ex.slurm.requeue, name) for d in job_dirs]
    submitted = time.time()
    try:
        jobs = executor.submit_array(calls)
    except Exception as err:  # noqa: BLE001 - submitit wraps sbatch's refusal in several error types
        raise ValueError(
            f"sbatch refused the study's job array: {_last_line(err)}; check that the cluster answers (`sinfo`) "
            "and executor.slurm (partition, account, qos, time, gpus_per_job, mem_gb) against it; "
            "`lmms-ac study plan FILE --dry-run` writes the sbatch script"
        ) from None
    subs = []
    for d, j in zip(job_dirs, jobs):
        S.write_json(
            Path(d) / "slurm.json",
            {"slurm_job_id": j.job_id, "slurm_name": name, "folder": str(folder), "submitted": submitted},
        )
        subs.append(Submission(Path(d), str(j.job_id), name, submitted))
    printer(
        f"submitted {len(jobs)} job(s) as SLURM array {jobs[0].job_id.split('_')[0]} named {name} "
        f"(at most {ex.slurm.array_parallelism} at once); submitit folder {folder}"
    )
    return subs


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def settle(sub: Submission) -> Dict[str, Any]:
    """The outcome of a submission that left the queue, from the worker's records (and sacct, matched by
    name and submit time, for a job whose worker could not say): ok, failed, interrupted or cancelled.
    Closes an attempt its killed worker left open, and records a failure the worker never could."""
    d = sub.job_dir
    spec = S.read_json(d / "job.json") or {}
    tries = S.attempts(d)
    mine = [t for t in tries if t.get("slurm_name") == sub.name] if sub.name else tries[-1:]
    last = mine[-1] if mine else None
    res: Dict[str, Any] = {
        "job_id": d.name,
        "ok": False,
        "slurm_id": sub.slurm_id,
        "exit_code": last.get("exit_code") if last else None,
        "missing": last.get("missing", []) if last else [],
        "attempt": len(tries),
        "last_line": str(last.get("last_line", "")) if last else "",
    }
    units = spec.get("units", [])
    if units and all(S.unit_done(d.parent.parent, u["unit_id"], u["kind"]) for u in units):
        return {**res, "ok": True, "missing": []}
    if last and last.get("end") and last.get("outcome") in ("ok", "failed"):
        return {**res, "ok": last["outcome"] == "ok"}
    state = Q.final_state(sub.slurm_id, sub.name, sub.submitted)
    said = f"SLURM {sub.slurm_id} ended {state}" if state else f"SLURM {sub.slurm_id} left the queue"
    counted = state in COUNTED_STATES or (state == "FAILED" and last is None)
    if last is not None and not last.get("end"):  # the worker was killed before it could record the end
        last.update(
            end=_now(),
            outcome="failed" if counted else "interrupted",
            last_line=f"{said} (the worker was killed); last line: {S.last_log_line(d / 'log.txt')}",
        )
    elif last is None and counted:  # it never ran (the setup failed, ...): still a failure to count
        tries.append({"attempt": len(tries) + 1, "end": _now(), "outcome": "failed", "slurm_id": sub.slurm_id,
                      "slurm_name": sub.name, "last_line": f"{said} before the worker started"})  # fmt: skip
    S.write_json(d / "attempts.json", tries)
    res["last_line"] = f"{said}: {res['last_line'] or 'no attempt started'}"
    if counted:
        return res
    return {**res, "interrupted": True, "cancelled": bool(state and state.startswith("CANCELLED"))}


def run_slurm(
    study: Study,
    job_dirs: Sequence[Path],
    printer: Printer = print,
    on_submit: Optional[Callable[[Dict[str, str]], None]] = None,
    wait: bool = True,
    watch: Sequence[Path] = (),
) -> Dict[str, Dict]:
    """Submit ``job_dirs`` as an array, then (``wait``) follow them and the ``watch`` jobs an earlier run
    submitted until each left the queue; resubmit failures with attempts left and interruptions (not
    cancellations). Returns job_id -> last outcome. ``wait=False``: submit and return at once."""
    ex = study.executor
    tracked: List[Submission] = []

    def send(dirs: Sequence[Path]) -> None:
        subs = submit(study, dirs, printer)
        tracked.extend(subs)
        if on_submit:
            on_submit({s.job_dir.name: s.slurm_id for s in subs})

    if job_dirs:
        send([Path(d) for d in job_dirs])
    if not wait:
        return {}
    tracked.extend(s for s in (Submission.of(Path(d)) for d in watch) if s is not None)
    results: Dict[str, Dict] = {}
    interruptions: Dict[str, int] = {}
    silent = False
    while tracked:
        try:
            time.sleep(ex.slurm.poll_s)
        except KeyboardInterrupt:
            printer(
                f"stopped waiting; {len(tracked)} job(s) keep running on SLURM (`lmms-ac study status` follows "
                "them; the next `study run` waits for them and never submits them again while they are queued)"
            )
            raise
        queue = Q.squeue()
        if queue is None:  # a restarting controller: decide nothing, give up on nothing
            if not silent:
                printer("SLURM does not answer (squeue); waiting for it: nothing is resubmitted or given up meanwhile")
            silent = True
            continue
        if silent:
            printer("SLURM answers again")
            silent = False
        again: List[Path] = []
        for sub in list(tracked):
            if find(queue, sub.slurm_id, sub.name) is not None:
                continue
            if Q.controller_state(sub.slurm_id, sub.name, sub.submitted) in Q.ALIVE_STATES:
                continue  # missing from this squeue listing only (a requeued job between states): still ours
            tracked.remove(sub)
            res = settle(sub)
            d = sub.job_dir
            failures = S.failures(S.attempts(d))
            if res["ok"]:
                printer(f"      {d.name} done (SLURM {sub.slurm_id})")
            elif res.get("cancelled"):
                printer(f"      {d.name} cancelled (SLURM {sub.slurm_id}); left for the next `study run`")
            elif res.get("interrupted"):
                interruptions[d.name] = interruptions.get(d.name, 0) + 1
                retry = interruptions[d.name] <= MAX_INTERRUPTIONS
                printer(
                    f"      {d.name} interrupted: {res['last_line']}; "
                    + ("resubmitting (not counted as a failure)" if retry else "left for the next `study run`")
                )
                if retry:
                    again.append(d)
                    continue
            else:
                retry = failures < ex.max_attempts
                printer(
                    f"      {d.name} FAILED ({failures}/{ex.max_attempts}): {res['last_line']}; "
                    + ("retrying" if retry else f"gave up after {failures} failed attempt(s)")
                )
                if retry:
                    again.append(d)
                    continue
            results[d.name] = res
        if again:
            send(again)
    return results
