"""Executors: run a list of prepared job folders and retry failures up to ``executor.max_attempts``
(interrupted attempts are retried too, without counting, at most ``MAX_INTERRUPTIONS`` times per run).

``local``: one job after another, or one per GPU slot in parallel when GPUs are visible (each job gets
``CUDA_VISIBLE_DEVICES`` of its slot; ``gpus_per_job`` GPUs per slot). ``slurm``: see
``lmms_ac.study.slurm`` (submitit job arrays). Both call ``lmms_ac.study.worker.run_job`` on each
job folder, so what counts as done is the same everywhere.
"""

from __future__ import annotations

import functools
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from lmms_ac.study import state as S
from lmms_ac.study.spec import ExecutorSpec

Runner = Callable[[str, Optional[Dict[str, str]]], Dict]
MAX_INTERRUPTIONS = 3  # per job and run: interruptions do not count as failures, but must not loop forever
Printer = Callable[[str], None]


def visible_gpus(setting) -> List[str]:
    """GPU ids for ``executor.gpus``: auto (``CUDA_VISIBLE_DEVICES``, else ``nvidia-smi -L``), none, N or a list."""
    if setting == "none":
        return []
    if isinstance(setting, list):
        return [str(g) for g in setting]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        found = [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    elif shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        found = [str(i) for i, ln in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]
    else:
        found = []
    if isinstance(setting, int):
        if setting > len(found):
            raise ValueError(f"executor.gpus is {setting} but {len(found)} GPU(s) are visible; lower it or use auto")
        return found[:setting]
    return found


def gpu_slots(ex: ExecutorSpec) -> List[Optional[Dict[str, str]]]:
    """One entry per parallel slot: the environment a job in that slot gets (None: run as is)."""
    gpus = visible_gpus(ex.gpus)
    if ex.gpus == "none":
        return [{"CUDA_VISIBLE_DEVICES": ""}]
    if not gpus:
        return [None]
    k = ex.gpus_per_job
    if k > len(gpus):
        raise ValueError(f"executor.gpus_per_job is {k} but only {len(gpus)} GPU(s) are visible")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i : i + k])} for i in range(0, len(gpus) - k + 1, k)]


def describe(job_dir: Path) -> str:
    """``" (eval tiny-a: mme, seed)\n      $ <the exact command>"`` from the job's job.json."""
    from lmms_ac.study.plan import shell_line

    spec = S.read_json(Path(job_dir) / "job.json")
    if not isinstance(spec, dict):
        return ""
    what = ", ".join(u.get("task") or u.get("score") or "?" for u in spec.get("units", []))
    return f" ({spec['kind']} {spec['entry']}: {what})\n      $ {shell_line(spec['argv'], spec.get('env'))}"


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a job's log, indented, for a failure message."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"      (no log at {path})"
    tail = [ln.split("\r")[-1] for ln in text.splitlines() if ln.strip()][-lines:]
    return f"      --- last lines of {path} ---\n" + "\n".join("      " + ln for ln in tail)


def run_local(
    job_dirs: Sequence[Path], ex: ExecutorSpec, runner: Optional[Runner] = None, printer: Printer = print
) -> Dict[str, Dict]:
    """Run every job, retrying failures while attempts remain; returns job_id -> last outcome."""
    from lmms_ac.study.worker import ChildProcesses, run_job

    children = ChildProcesses()
    runner = runner or functools.partial(run_job, children=children)
    slots = gpu_slots(ex)
    todo: "queue.Queue[Path]" = queue.Queue()
    for d in job_dirs:
        todo.put(Path(d))
    results: Dict[str, Dict] = {}
    interruptions: Dict[str, int] = {}
    lock = threading.Lock()
    errors: List[BaseException] = []
    total = len(job_dirs)

    def work(slot_env: Optional[Dict[str, str]]) -> None:
        while not errors:
            try:
                d = todo.get_nowait()
            except queue.Empty:
                return
            where = f" [CUDA_VISIBLE_DEVICES={slot_env['CUDA_VISIBLE_DEVICES']}]" if slot_env else ""
            with lock:
                printer(f"[{len(results) + 1}/{total}] run {d.name}{where}{describe(d)}")
            try:
                res = runner(str(d), slot_env)
            except BaseException as err:  # KeyboardInterrupt included: stop the other slots too
                errors.append(err)
                return
            if res.get("interrupted"):
                interruptions[d.name] = interruptions.get(d.name, 0) + 1
                retry = interruptions[d.name] <= MAX_INTERRUPTIONS
            else:
                retry = not res["ok"] and not res.get("busy") and S.failures(S.attempts(d)) < ex.max_attempts
            with lock:
                if res["ok"]:
                    printer(f"      {d.name} done")
                elif res.get("busy") or res.get("interrupted"):
                    printer(f"      {d.name}: {res['last_line']}" + ("; retrying" if retry else ""))
                else:
                    printer(
                        f"      {d.name} FAILED (failure {S.failures(S.attempts(d))}/{ex.max_attempts}, exit "
                        f"{res['exit_code']}): {res['last_line']}" + ("; retrying" if retry else "")
                    )
                if not retry:
                    results[res["job_id"]] = res
                    if not res["ok"] and not res.get("busy") and not res.get("interrupted"):
                        printer(log_tail(d / "log.txt"))
            if retry:
                todo.put(d)

    if len(slots) == 1:
        work(slots[0])
    else:
        threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in slots]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
        except KeyboardInterrupt:  # the jobs' children run in their own sessions: stop them ourselves
            errors.append(KeyboardInterrupt())
            children.terminate_all()
            for t in threads:
                t.join(timeout=30)
            raise
    if errors:
        raise errors[0]
    return results
