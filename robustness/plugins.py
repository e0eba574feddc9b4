"""Probe plugins: the modules named in ``$LMMS_AC_PROBES`` and the ``lmms_ac.probes`` entry points,
imported before anything lists or resolves generated tasks (they call ``register_probe`` /
``register_benchmark``). One job: import them once each per process; a module that fails to
import is an error, never skipped."""

from __future__ import annotations

import importlib
import os
import re
import threading
from typing import List, Set

PROBES_ENV = "LMMS_AC_PROBES"
ENTRY_POINT_GROUP = "lmms_ac.probes"


def probe_modules() -> List[str]:
    """The module names listed in ``$LMMS_AC_PROBES`` (comma or space separated)."""
    return [m.strip() for m in re.split(r"[,\s]+", os.environ.get(PROBES_ENV, "")) if m.strip()]


class PluginLoader:
    """Imports probe plugins once each; safe to call from several threads."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._modules: Set[str] = set()
        self._entry_points_loaded = False

    def ensure(self) -> None:
        with self._lock:
            if not self._entry_points_loaded:
                self._entry_points_loaded = True
                from importlib.metadata import entry_points

                for ep in entry_points(group=ENTRY_POINT_GROUP):
                    try:
                        ep.load()
                    except Exception as err:
                        raise ImportError(
                            f"lmms-ac probe plugin {ep.name!r} ({ep.value}) failed to load: {err}"
                        ) from err
            for module in probe_modules():
                if module in self._modules:
                    continue
                try:
                    importlib.import_module(module)
                except Exception as err:
                    raise ImportError(f"{PROBES_ENV}: cannot import probe module {module!r}: {err}") from err
                self._modules.add(module)


_LOADER = PluginLoader()


def ensure_plugins() -> None:
    """Import the probe plugins of this process (once each)."""
    _LOADER.ensure()
