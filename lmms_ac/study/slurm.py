"""The ``slurm`` executor: job arrays through submitit (no hand-written sbatch templating).

Every ``study run`` submits into a fresh submitit folder (``<output>/slurm/<time>``: SLURM job ids
restart after a controller state wipe, and submitit keys its files by job id). Each array element
calls ``worker.run_job`` on one job folder on the shared filesystem; ``executor.slurm.requeue``
makes the callable checkpointable, so a preempted or timed-out job is requeued by submitit. After
the array finishes, failed jobs with attempts left are resubmitted as a new array; jobs cancelled by
a user (``scancel``) are not: they stay pending for the next ``study run``.
"""

from __future__ import annotations

import shlex
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from lmms_ac.study import state as S
from lmms_ac.study.spec import Study

Printer = Callable[[str], None]


class SubmititJob:
    """What submitit pickles: run one job folder; ``checkpoint`` requeues it (preemption, timeout)."""

    def __init__(self, job_dir: str, requeue: bool = True):
        self.job_dir, self.requeue = job_dir, requeue

    def __call__(self) -> Dict[str, Any]:
        from lmms_ac.study.worker import run_job

        return run_job(self.job_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        if not self.requeue:
            return None
        import submitit

        return submitit.helpers.DelayedSubmission(SubmititJob(self.job_dir, self.requeue))


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise RuntimeError("the slurm executor needs submitit: pip install submitit") from None
    return submitit


def slurm_parameters(study: Study) -> Dict[str, Any]:
    """submitit ``SlurmExecutor`` parameters from ``executor.slurm``."""
    s = study.executor.slurm
    params: Dict[str, Any] = {
        "job_name": f"lmms-ac-{study.name}",
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


_UNSETTLED = ("RUNNING", "COMPLETING", "PENDING", "REQUEUED", "CONFIGURING", "SUSPENDED", "UNKNOWN")


def _cancelled(job: Any, wait_s: float = 90.0) -> bool:
    """Whether SLURM says the job was cancelled (scancel). The worker may hand back its result before
    SLURM has recorded the end, so wait (sacct) until the state settles."""
    deadline = time.time() + wait_s
    state = ""
    while True:
        try:
            state = str(job.get_info(mode="force").get("State", "")).upper()
        except Exception:  # noqa: BLE001 - sacct missing or failing: treat as not cancelled
            return False
        if (state and not state.startswith(_UNSETTLED)) or time.time() > deadline:
            return state.startswith("CANCELLED")
        time.sleep(2)


def run_slurm(
    study: Study,
    job_dirs: Sequence[Path],
    printer: Printer = print,
    on_submit: Optional[Callable[[Dict[str, str]], None]] = None,
    wait: bool = True,
) -> Dict[str, Dict]:
    """Submit the jobs as arrays, wait, resubmit failures with attempts left; job_id -> last outcome.
    ``wait=False``: submit and return at once (the jobs write their results to the shared output folder;
    ``study status`` follows them, the next ``study run`` retries what failed)."""
    submitit = _import_submitit()
    out = study.output_dir
    ex = study.executor
    results: Dict[str, Dict] = {}
    todo = [Path(d) for d in job_dirs]
    round_ = 0
    while todo:
        round_ += 1
        folder = out / "slurm" / f"{datetime.now().strftime('%Y%m%d_%H%M%S_%f')}"
        executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=3)
        executor.update_parameters(**slurm_parameters(study))
        calls = [SubmititJob(str(d), ex.slurm.requeue) for d in todo]
        jobs = executor.submit_array(calls)
        ids = {d.name: j.job_id for d, j in zip(todo, jobs)}
        for d, j in zip(todo, jobs):
            S.write_json(d / "slurm.json", {"slurm_job_id": j.job_id, "folder": str(folder), "submitted": time.time()})
        printer(
            f"submitted {len(jobs)} job(s) as SLURM array {jobs[0].job_id.split('_')[0]} "
            f"(at most {ex.slurm.array_parallelism} at once); submitit folder {folder}"
        )
        if on_submit:
            on_submit(ids)
        if not wait:
            return results
        pending = dict(zip([d for d in todo], jobs))
        retry: List[Path] = []
        while pending:
            try:
                time.sleep(ex.slurm.poll_s)
            except KeyboardInterrupt:
                printer(
                    f"stopped waiting; {len(pending)} job(s) keep running on SLURM (`lmms-ac study status` "
                    "follows them; another `study run` does not submit them again while they are queued or running)"
                )
                raise
            for d, job in list(pending.items()):
                if not job.done():
                    continue
                del pending[d]
                try:
                    res = job.result()
                except Exception as err:  # noqa: BLE001 - died without a result: cancelled, node failure, OOM
                    state = getattr(job, "state", "?")
                    res = {
                        "job_id": d.name,
                        "ok": False,
                        "exit_code": None,
                        "missing": [],
                        "attempt": len(S.attempts(d)),
                        "last_line": f"SLURM {job.job_id} {state}: {str(err)[-300:]}",
                        "cancelled": _cancelled(job),
                    }
                if not res["ok"] and not res.get("cancelled"):
                    # a scancel'd job may still return: SLURM killed the evaluation, the worker reported it
                    res["cancelled"] = _cancelled(job)
                again = not res["ok"] and not res.get("cancelled") and len(S.attempts(d)) < ex.max_attempts
                if res["ok"]:
                    printer(f"      {d.name} done (SLURM {job.job_id})")
                else:
                    why = (
                        "cancelled; left for the next run"
                        if res.get("cancelled")
                        else ("retrying" if again else f"gave up after {len(S.attempts(d))} attempt(s)")
                    )
                    printer(f"      {d.name} FAILED (SLURM {job.job_id}): {res['last_line']}; {why}")
                if again:
                    retry.append(d)
                else:
                    results[res["job_id"]] = res
        todo = retry
    return results


def squeue_ids() -> Optional[set]:
    """SLURM job ids in the queue (None when squeue is not available)."""
    import shutil
    import subprocess

    if not shutil.which("squeue"):
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return {ln.strip() for ln in out.stdout.splitlines() if ln.strip()} if out.returncode == 0 else None
