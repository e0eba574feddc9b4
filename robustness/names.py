"""Task name -> perturbation: which perturbation a generated robustness task applies.

The generated index (``index.json``, loaded by :func:`~lmms_ac.robustness.index.extend_index`)
holds the mapping; a name this process indexed is answered from it, and a name that a user YAML
took over (the index keeps theirs) is clean. A process that built no TaskManager (a model given
only the task name) reads the name itself: ``<base>_<form>`` with ``<base>`` a registered
benchmark's task and ``<form>`` a catalogue string form. Probe plugins are imported first.
Cached per registry version: O(1) after the first call.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, Mapping, Optional, Tuple

from lmms_ac.benchmarks import BENCHMARKS, base_tasks

from .base import Perturbation
from .catalogue import PERTURBATIONS
from .grammar import parse_perturbation
from .plugins import PROBES_ENV, ensure_plugins
from .variants import VARIANTS


class TaskNames:
    """The lookup with its cache; ``indexed``: what the generated index of this process says."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._indexed: Dict[str, Optional[str]] = {}  # task -> seed-ful form (None: a user task took the name)
        self._cache: Dict[str, Optional[Perturbation]] = {}
        self._key: Any = None

    def add_index(self, ours: Mapping[str, str], shadowed: Any = ()) -> None:
        """Record the generated tasks an index holds (``ours``: name -> string form) and the
        generated names a user task took over (``shadowed``)."""
        with self._lock:
            self._indexed.update(ours)
            self._indexed.update({name: None for name in shadowed if name not in ours})
            self._cache.clear()

    @staticmethod
    def _version() -> Tuple[int, int, int, str]:
        return (PERTURBATIONS.version, BENCHMARKS.version, VARIANTS.version, os.environ.get(PROBES_ENV, ""))

    def lookup(self, task_name: str) -> Optional[Perturbation]:
        key = self._version()
        if self._key != key:
            ensure_plugins()
            with self._lock:
                self._cache.clear()
                self._key = self._version()
        try:
            return self._cache[task_name]
        except KeyError:
            pass
        with self._lock:
            known, form = task_name in self._indexed, self._indexed.get(task_name)
        if known:
            result = parse_perturbation(form) if form else None
        else:
            result = _parse_name(task_name)
        self._cache[task_name] = result
        return result


def _parse_name(task_name: str) -> Optional[Perturbation]:
    for base in sorted(base_tasks(), key=len, reverse=True):
        if task_name.startswith(base + "_"):
            try:
                return parse_perturbation(task_name[len(base) + 1 :])
            except (ValueError, KeyError):
                continue
    return None


TASK_NAMES = TaskNames()


def perturbation_for_task(task_name: str) -> Optional[Perturbation]:
    """The perturbation a generated robustness task applies, or None for any other task."""
    return TASK_NAMES.lookup(task_name)


def base_task(task_name: str) -> str:
    """The base task of a generated task (the task itself when clean)."""
    p = perturbation_for_task(task_name)
    if p is None:
        return task_name
    return task_name[: -len(p.to_string()) - 1]
