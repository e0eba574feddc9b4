"""Run one job (in this process's child): the same code on a laptop, a GPU box and a SLURM node.

``run_job(job_dir)`` reads ``job.json``, runs its exact argv with output to ``log.txt`` while a
heartbeat keeps ``running.json`` fresh, then reads the results back: a unit is done only if its task
is in an lmms-eval results file written by this attempt (lmms-eval exits 0 when evaluation fails, so
the exit code proves nothing) or its row is in the job's scores CSV. Each done unit gets its
``done/`` file, written atomically; anything short of that leaves the unit pending.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from lmms_ac.study import state as S

RESULTS_GLOB = "*_results.json"


class ChildProcesses:
    """The programs the jobs of one local run are running (each in its own session), so that Ctrl-C in a
    run with several GPU slots can stop them all (thread-safe; owned by the executor, not the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: "set[subprocess.Popen]" = set()

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc: Optional[subprocess.Popen]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def terminate_all(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


# per-task dicts of an lmms-eval results file, cut down to one task in a unit's file
_DROP = ("groups", "group_subtasks")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _slurm_ids() -> Dict[str, str]:
    """SLURM's ids of this job; ``slurm_id`` is the one scancel/squeue take (``<array>_<task>`` in an array:
    SLURM 22.05's scancel refuses an array element's raw job id)."""
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")
    ids = {k.lower(): os.environ[k] for k in keys if k in os.environ}
    if "slurm_array_job_id" in ids and "slurm_array_task_id" in ids:
        ids["slurm_id"] = f"{ids['slurm_array_job_id']}_{ids['slurm_array_task_id']}"
    elif "slurm_job_id" in ids:
        ids["slurm_id"] = ids["slurm_job_id"]
    return ids


def _device(env: Dict[str, str]) -> str:
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return "cuda" if Path("/dev/nvidia0").exists() else "cpu"
    return "cuda" if visible.strip() not in ("", "-1") else "cpu"


def resolve_argv(argv: List[str], env: Dict[str, str]) -> List[str]:
    """``--device auto`` (score jobs) -> cuda when this job was given a GPU, else cpu."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] == "--device" and out[i + 1] == "auto":
            out[i + 1] = _device(env)
    return out


class _Heartbeat(threading.Thread):
    def __init__(self, path: Path, info: Dict[str, Any]):
        super().__init__(daemon=True)
        self.path, self.info, self.stop = path, info, threading.Event()

    def beat(self) -> None:
        S.write_json(self.path, {**self.info, "heartbeat": time.time()})

    def run(self) -> None:
        while not self.stop.wait(S.HEARTBEAT_S):
            try:
                self.beat()
            except OSError:
                pass


def one_task_results(doc: Dict[str, Any], task: str) -> Dict[str, Any]:
    """An lmms-eval results document cut down to ``task`` (per-task dicts filtered, groups dropped)."""
    out: Dict[str, Any] = {}
    for k, v in doc.items():
        if k in _DROP:
            continue
        if isinstance(v, dict) and task in v and k not in ("config",):
            out[k] = {task: v[task]}
        elif k in ("results", "configs", "n-samples", "versions", "n-shot", "higher_is_better"):
            out[k] = {}
        else:
            out[k] = v
    return out


def _results_docs(root: Path, since: float) -> List[tuple]:
    docs = []
    for p in sorted(root.rglob(RESULTS_GLOB)) if root.is_dir() else []:
        if p.stat().st_mtime + 1 < since:
            continue
        doc = S.read_json(p)
        if isinstance(doc, dict) and isinstance(doc.get("results"), dict):
            docs.append((p, doc))
    return docs


def harvest(spec: Dict[str, Any], out: Path, since: float) -> List[str]:
    """Write the done files of the units this attempt produced; returns the ids of units still missing."""
    job_dir = Path(spec["job_dir"])
    missing: List[str] = []
    marker = {"job_id": spec["job_id"], "written": _now(), **_slurm_ids()}
    if spec["kind"] == "eval":
        docs = _results_docs(job_dir / "lmms_eval", since)
        for u in spec["units"]:
            found = [(p, d) for p, d in docs if u["task"] in d["results"]]
            if not found:
                missing.append(u["unit_id"])
                continue
            path, doc = found[-1]
            unit_doc = one_task_results(doc, u["task"])
            unit_doc["lmms_ac_study"] = {
                **marker,
                "unit_id": u["unit_id"],
                "task": u["task"],
                "entry": u["entry"],
                "variant": u["variant"],
                "source": str(path),
            }
            S.write_json(S.done_path(out, u["unit_id"], "eval"), unit_doc)
    else:
        from lmms_ac.scores.store import read_scores

        try:
            rows = read_scores(job_dir / "scores.csv")
        except ValueError:
            rows = []
        for u in spec["units"]:
            found = [r for r in rows if r["variant"] == u["variant"] and r["score"] == u["score"]]
            if not found:
                missing.append(u["unit_id"])
                continue
            doc = {
                "row": found[-1],
                "lmms_ac_study": {
                    **marker,
                    "unit_id": u["unit_id"],
                    "score": u["score"],
                    "entry": u["entry"],
                    "variant": u["variant"],
                },
            }
            S.write_json(S.done_path(out, u["unit_id"], "score"), doc)
    return missing


def _alive_in(pid: int, job_dir: Path) -> bool:
    """Process ``pid`` runs and its command line names ``job_dir`` (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return str(job_dir) in cmdline


def stop_orphan(job_dir: Path) -> Optional[str]:
    """Stop the program an interrupted attempt left running on this host (its worker was killed outright,
    e.g. ``kill -9``: the program runs in its own session, so it outlived the worker and would write into
    the folder the new attempt writes). Returns what was done, or None when nothing was left running."""
    doc = S.read_json(job_dir / "running.json") or {}
    pid = doc.get("child_pid")
    if not isinstance(pid, int) or doc.get("host") != S.host() or not _alive_in(pid, job_dir):
        return None
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.time() + wait_s
        while time.time() < deadline and _alive_in(pid, job_dir):
            time.sleep(0.1)
        if not _alive_in(pid, job_dir):
            break
    return f"stopped pid {pid}, left running by attempt {doc.get('attempt')} (its worker was killed)"


def run_job(
    job_dir: str, extra_env: Optional[Dict[str, str]] = None, children: Optional[ChildProcesses] = None
) -> Dict[str, Any]:
    """Run the job in ``job_dir`` once; returns ``{job_id, ok, exit_code, missing, attempt, last_line}``.
    ``children``: where the program is registered while it runs (the local executor's Ctrl-C stops them)."""
    job_dir = Path(job_dir)
    spec = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    out = job_dir.parent.parent
    tries = S.attempts(job_dir)
    n = len(tries) + 1
    stopped = stop_orphan(job_dir)
    log = job_dir / "log.txt"
    if log.exists():
        os.replace(log, job_dir / f"log.attempt{n - 1}.txt")
    start = time.time()
    record: Dict[str, Any] = {"attempt": n, "start": _now(), "host": S.host(), "pid": os.getpid(), **_slurm_ids()}
    S.write_json(job_dir / "attempts.json", tries + [record])
    env = {**os.environ, **spec.get("env", {}), **(extra_env or {})}
    argv = resolve_argv(spec["argv"], env)
    hb = _Heartbeat(
        job_dir / "running.json",
        {
            "job_id": spec["job_id"],
            "attempt": n,
            "host": S.host(),
            "pid": os.getpid(),
            "started": record["start"],
            **_slurm_ids(),
        },
    )
    hb.beat()
    hb.start()
    proc: Optional[subprocess.Popen] = None
    code: Optional[int] = None
    try:
        with open(log, "ab") as fh:
            if stopped:
                fh.write(f"# {_now()} {stopped}\n".encode())
            fh.write(f"# {_now()} attempt {n} on {S.host()}\n# cwd {out}\n# {' '.join(argv)}\n".encode())
            fh.flush()
            try:
                proc = subprocess.Popen(
                    argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(out), start_new_session=True
                )
                if children is not None:
                    children.add(proc)
                hb.info["child_pid"] = proc.pid  # a killed worker's next attempt stops it (stop_orphan)
                hb.beat()
                code = proc.wait()
            except OSError as err:  # the program itself is missing
                fh.write(f"cannot start {argv[0]}: {err}\n".encode())
                code = 127
        missing = harvest(spec, out, start)
    finally:
        if children is not None:
            children.discard(proc)
        if proc is not None and proc.poll() is None:  # interrupted (Ctrl-C, preemption): take the child with us
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        hb.stop.set()
        if code is None:  # leave the attempt open: status shows it as interrupted
            try:
                (job_dir / "running.json").unlink()
            except FileNotFoundError:
                pass
    ok = not missing
    last = S.last_log_line(log)
    if not ok and code is not None and code < 0:
        last = f"killed by {signal.Signals(-code).name} (cancelled, preempted or out of memory); last line: {last}"
    elif not ok and code == 0:
        last = (
            f"exited 0 but wrote no results for {len(missing)} of {len(spec['units'])} unit(s) "
            f"(lmms-eval exits 0 when evaluation fails; see the log); last line: {last}"
        )
    record.update(
        end=_now(),
        duration_s=round(time.time() - start, 2),
        exit_code=code,
        outcome="ok" if ok else "failed",
        missing=missing,
        last_line=last,
    )
    S.write_json(job_dir / "attempts.json", tries + [record])
    try:
        (job_dir / "running.json").unlink()
    except FileNotFoundError:
        pass
    return {"job_id": spec["job_id"], "ok": ok, "exit_code": code, "missing": missing, "attempt": n, "last_line": last}


class SubmititJob:
    """The callable submitit pickles: run one job; on preemption or timeout, requeue itself."""

    def __init__(self, job_dir: str):
        self.job_dir = job_dir

    def __call__(self) -> Dict[str, Any]:
        return run_job(self.job_dir)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(SubmititJob(self.job_dir))
