"""One ``study run`` at a time per study: an exclusive lock on ``<output>/.study-run.lock``.

The lock is the kernel's (``fcntl.flock``; over NFS, a POSIX lock through lockd): it is released when
its holder exits however it exits, ``kill -9`` included, so a dead run never blocks the next one and
no age is ever guessed. A second run waits for the first, saying who holds the study, then goes on
with what is left (usually nothing).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from lmms_ac.study.liveness import identity

LOCK_NAME = ".study-run.lock"


def _holder(fd: int) -> str:
    try:
        doc = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        doc = {}
    if not isinstance(doc, dict) or "pid" not in doc:
        return "another `study run`"
    return f"`study run` pid {doc.get('pid')} on {doc.get('host')} (since {doc.get('since')})"


@contextlib.contextmanager
def study_lock(out: Path, printer: Callable[[str], None] = print, poll_s: float = 1.0) -> Iterator[None]:
    """Hold the study's run lock for the block; wait (saying so) while another run holds it."""
    path = Path(out) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    printer(
                        f"waiting for {_holder(fd)} to finish this study ({path}); it runs the same jobs, "
                        "so this run goes on with whatever is left after it (Ctrl-C stops waiting)"
                    )
                    said = True
                time.sleep(poll_s)
        me = {**identity(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
