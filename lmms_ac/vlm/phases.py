"""Wall time per inference phase (image encoding, shared prefill, suffix prefill, each decoding
step), for the profile in ``bench/profile_prefix.py``. Off unless a ``PhaseTimes`` is attached."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

import torch


@dataclass
class PhaseTimes:
    """Seconds and calls per phase name; ``steps`` holds each decoding step's seconds in order."""

    seconds: Dict[str, float] = field(default_factory=dict)
    calls: Dict[str, int] = field(default_factory=dict)
    steps: List[float] = field(default_factory=list)
    device: Optional[torch.device] = None  # synchronized around each phase when it is a GPU

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            took = time.perf_counter() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + took
            self.calls[name] = self.calls.get(name, 0) + 1
            if name == "decode step":
                self.steps.append(took)


@contextlib.contextmanager
def maybe_phase(times: Optional[PhaseTimes], name: str) -> Iterator[None]:
    """``times.phase(name)``, or nothing when no timer is attached."""
    if times is None:
        yield
        return
    with times.phase(name):
        yield
