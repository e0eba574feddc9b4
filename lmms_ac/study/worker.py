"""Run one job (in this process's child): the same code on a laptop, a GPU box and a SLURM node.

``run_job(job_dir)`` reads ``job.json``, runs its exact argv with output to ``log.txt`` while a
heartbeat keeps ``running.json`` fresh, then reads the results back: a unit is done only if its task
is in an lmms-eval results file written by this attempt (lmms-eval exits 0 when evaluation fails, so
the exit code proves nothing) or its row is in the job's scores CSV. Each done unit gets its
``done/`` file, written once (``state.claim_done``); anything short of that leaves the unit pending.

An attempt ends ``ok``, ``failed`` (the program ran and did not deliver: counts against
``executor.max_attempts``) or ``interrupted`` (SIGTERM/SIGHUP to the worker or the program, Ctrl-C,
submitit's preemption exit: nothing is harvested, and it does not count). A worker killed outright
leaves its attempt open; ``liveness`` sees the worker is gone, and the next attempt stops the program
it left running (``stop_orphan``).
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
from typing import Any, Dict, List, Optional, Tuple

from lmms_ac.study import liveness as L
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


def _claim(out: Path, unit: Dict[str, Any], kind: str, doc: Dict[str, Any], log: Path, dups: List[str]) -> None:
    """Write a unit's done file once; a late second result is kept beside it, with a line in the log."""
    dup = S.claim_done(S.done_path(out, unit["unit_id"], kind), doc)
    if dup is not None:
        dups.append(str(dup))
        _log(log, f"unit {unit['unit_id']} was already done; this attempt's result is kept as {dup}")


def harvest(spec: Dict[str, Any], out: Path, since: float) -> Tuple[List[str], List[str]]:
    """Write the done files of the units this attempt produced (each once: see ``state.claim_done``);
    returns the ids of units still missing and the late duplicates kept beside done files."""
    job_dir = Path(spec["job_dir"])
    log = job_dir / "log.txt"
    missing: List[str] = []
    dups: List[str] = []
    marker = {"job_id": spec["job_id"], "written": _now(), **_slurm_ids()}
    if spec["kind"] == "eval":
        docs = _results_docs(job_dir / "lmms_eval", since)
        for u in spec["units"]:
            found = [(p, d) for p, d in docs if u["task"] in d["results"]]
            if not found:
                if not S.unit_done(out, u["unit_id"], "eval"):  # done by another attempt: not missing
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
            _claim(out, u, "eval", unit_doc, log, dups)
    else:
        from lmms_ac.scores.store import read_scores

        try:
            rows = read_scores(job_dir / "scores.csv")
        except ValueError:
            rows = []
        for u in spec["units"]:
            found = [r for r in rows if r["variant"] == u["variant"] and r["score"] == u["score"]]
            if not found:
                if not S.unit_done(out, u["unit_id"], "score"):
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
            _claim(out, u, "score", doc, log, dups)
    return missing, dups


def stop_orphan(job_dir: Path) -> Optional[str]:
    """Stop the program an interrupted attempt left running on this host. Only when the recorded worker
    is dead (host, pid and start time: a live worker of another ``study run`` is never touched) and the
    recorded program is still the same process (pid and start time). Returns what was done, or None."""
    doc = S.read_json(job_dir / "running.json") or {}
    pid, start = doc.get("child_pid"), doc.get("child_start")
    if doc.get("host") != L.host() or L.alive(doc.get("pid"), doc.get("pid_start")) or not L.alive(pid, start):
        return None
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        if L.wait_for_exit(pid, start, wait_s):
            break
    return f"stopped pid {pid}, left running by attempt {doc.get('attempt')} (its worker was killed)"


class _StopSignals:
    """While a job runs in the main thread: SIGTERM / SIGHUP (scancel, preemption, requeue, a stopped
    ``study run``) are passed on to the program's session and remembered, so the attempt is recorded as
    interrupted (never as failed, never with done files) before the worker exits."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.child: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        self.received = signum
        if self.child is not None:
            try:
                os.killpg(self.child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# the program ended by one of these: someone stopped it (scancel, requeue, kill), it did not fail
STOPPED_BY = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _log(log: Path, line: str) -> None:
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"# {_now()} {line}\n")


def run_job(
    job_dir: str,
    extra_env: Optional[Dict[str, str]] = None,
    children: Optional[ChildProcesses] = None,
    submission: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Run the job in ``job_dir`` once; returns ``{job_id, ok, exit_code, missing, attempt, last_line,
    interrupted, busy}``. ``children``: where the program is registered while it runs (the local executor's
    Ctrl-C stops them); ``submission``: the SLURM submission this worker belongs to (``slurm_name``)."""
    job_dir = Path(job_dir)
    spec = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    out = job_dir.parent.parent
    tries = S.attempts(job_dir)
    n = len(tries) + 1
    held = S.read_json(job_dir / "running.json") or {}
    if (
        held.get("host") == L.host()
        and held.get("pid") != os.getpid()
        and L.alive(held.get("pid"), held.get("pid_start"))
    ):
        why = f"already running in pid {held['pid']} on this host (attempt {held.get('attempt')}); not started twice"
        return {"job_id": spec["job_id"], "ok": False, "busy": True, "interrupted": False, "exit_code": None,
                "missing": [], "attempt": n - 1, "last_line": why}  # fmt: skip
    stopped = stop_orphan(job_dir)
    log = job_dir / "log.txt"
    if log.exists():
        os.replace(log, job_dir / f"log.attempt{n - 1}.txt")
    start = time.time()
    who = L.identity()
    sub = {k: v for k, v in (submission or {}).items() if k == "slurm_name"}
    record: Dict[str, Any] = {"attempt": n, "start": _now(), **who, **_slurm_ids(), **sub}
    S.write_json(job_dir / "attempts.json", tries + [record])
    env = {**os.environ, **spec.get("env", {}), **(extra_env or {})}
    argv = resolve_argv(spec["argv"], env)
    hb = _Heartbeat(
        job_dir / "running.json",
        {"job_id": spec["job_id"], "attempt": n, "started": record["start"], **who, **_slurm_ids(), **sub},
    )
    hb.beat()
    hb.start()
    proc: Optional[subprocess.Popen] = None
    code: Optional[int] = None
    missing: List[str] = [u["unit_id"] for u in spec["units"]]
    duplicates: List[str] = []
    stop = _StopSignals()
    error: Optional[BaseException] = None
    interrupted = False
    try:
        with stop, open(log, "ab") as fh:
            if stopped:
                fh.write(f"# {_now()} {stopped}\n".encode())
            fh.write(f"# {_now()} attempt {n} on {L.host()}\n# cwd {out}\n# {' '.join(argv)}\n".encode())
            fh.flush()
            try:
                proc = subprocess.Popen(
                    argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(out), start_new_session=True
                )
                stop.child = proc.pid
                if children is not None:
                    children.add(proc)
                # a killed worker's next attempt stops it (stop_orphan), knowing it by pid and start time
                hb.info.update(child_pid=proc.pid, child_start=L.process_start(proc.pid))
                hb.beat()
                if stop.received is None:
                    code = proc.wait()
                else:  # the signal came before the program was known: stop it now
                    os.killpg(proc.pid, signal.SIGTERM)
                    code = proc.wait()
            except OSError as err:  # the program itself is missing
                fh.write(f"cannot start {argv[0]}: {err}\n".encode())
                code = 127
        interrupted = stop.received is not None or (code is not None and code < 0 and -code in STOPPED_BY)
        if not interrupted:
            missing, duplicates = harvest(spec, out, start)
    except (KeyboardInterrupt, SystemExit) as err:  # Ctrl-C, submitit's preemption exit: an interruption
        error, interrupted = err, True
    except Exception as err:  # noqa: BLE001 - the worker failed (e.g. a full disk): recorded, then raised
        error = err
    finally:
        if children is not None:
            children.discard(proc)
        if proc is not None and proc.poll() is None:  # interrupted: take the program with us
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        hb.stop.set()
        hb.join(timeout=10)  # no beat may land after running.json is removed below
    ok = not missing and not interrupted and error is None
    last = S.last_log_line(log)
    if interrupted:
        what = (
            f"the worker got {signal.Signals(stop.received).name}"
            if stop.received
            else (type(error).__name__ if error is not None else f"the program got {signal.Signals(-code).name}")
        )
        last = (
            f"interrupted ({what}: cancelled, preempted, requeued or stopped); retried without counting "
            f"against executor.max_attempts; last line: {last}"
        )
    elif error is not None:
        last = f"the worker failed: {type(error).__name__}: {error}"
    elif not ok and code is not None and code < 0:
        last = f"killed by {signal.Signals(-code).name} (out of memory?); last line: {last}"
    elif not ok and code == 0:
        last = (
            f"exited 0 but wrote no results for {len(missing)} of {len(spec['units'])} unit(s) "
            f"(lmms-eval exits 0 when evaluation fails; see the log); last line: {last}"
        )
    record.update(
        end=_now(),
        duration_s=round(time.time() - start, 2),
        exit_code=code,
        outcome="interrupted" if interrupted else ("ok" if ok else "failed"),
        missing=missing,
        last_line=last,
    )
    if duplicates:
        record["duplicates"] = duplicates
    S.write_json(job_dir / "attempts.json", tries + [record])
    _unlink(job_dir / "running.json")
    if error is not None:
        raise error
    if stop.received is not None:  # the worker itself was told to stop: do so, after the record
        raise SystemExit(128 + stop.received)
    return {
        "job_id": spec["job_id"],
        "ok": ok,
        "interrupted": interrupted,
        "busy": False,
        "exit_code": code,
        "missing": missing,
        "attempt": n,
        "last_line": last,
    }
