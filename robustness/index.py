"""Make the generated robustness tasks visible to an lmms-eval TaskManager: find the base tasks'
YAMLs in its index, reuse (or generate) the cached directory for their hash, and add its tasks and
tags. Called for every TaskManager by the plugin hook, which hands over the index through the adapter
of lmms-eval internals (``lmms_ac.plugin.TaskManagerIndex``; this module never imports the plugin)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Mapping, Optional, Protocol, Sequence, Tuple

from loguru import logger

from lmms_ac.benchmarks import all_benchmarks

from . import task_cache
from .generation import generate, index_hash, task_specs
from .names import TASK_NAMES
from .plugins import ensure_plugins
from .variants import VariantFamily, selected_families


class TaskIndex(Protocol):
    """A TaskManager's index as the plugin's adapter (``lmms_ac.plugin.TaskManagerIndex``) offers it."""

    def entries(self) -> Mapping[str, Mapping[str, Any]]: ...

    def add(self, tasks: Mapping[str, str], tags: Mapping[str, Sequence[str]]) -> Tuple[List[str], List[str], int]: ...


@dataclass
class IndexInfo:
    """What :func:`extend_index` did."""

    directory: Path
    hash: str
    tasks: int
    tags: int
    generated: bool
    skipped: List[str] = field(default_factory=list)


def extend_index(target: TaskIndex, families: Optional[Sequence[VariantFamily]] = None) -> IndexInfo:
    """Add the generated robustness tasks and their tags to a TaskManager's index.

    Bases missing from the index (e.g. ``include_defaults=False``) are skipped; names the index
    already has (a user YAML of the same name) win over ours. Generates the YAMLs only when the
    hash changed; otherwise reads one ``index.json``.
    """
    ensure_plugins()
    families = selected_families() if families is None else list(families)
    index = target.entries()
    base_yamls = {}
    skipped: List[str] = []
    for bench in all_benchmarks():
        entry = index.get(bench.task)
        if entry is None:
            skipped.append(bench.task)
            continue
        if entry.get("type") != "task" or not isinstance(entry.get("yaml_path"), str):
            logger.warning(
                f"lmms-ac: benchmark {bench.key!r} maps to {bench.task!r}, a {entry.get('type')} of "
                "lmms-eval, not a single task; no robustness variants generated for it"
            )
            skipped.append(bench.task)
            continue
        base_yamls[bench.task] = os.path.abspath(entry["yaml_path"])
    index_id = index_hash(base_yamls, families)
    directory = task_cache.cache_root() / index_id
    generated = False
    if not task_cache.claim_directory(directory):
        specs = task_specs(base_yamls, families)
        generate(directory, specs, base_yamls, index_id)
        generated = True
        logger.info(f"lmms-ac: generated {len(specs)} robustness tasks in {directory}")
    task_cache.prune_once(directory)
    manifest = task_cache.load_manifest(directory)
    paths = {name: os.path.join(str(directory), entry["yaml"]) for name, entry in manifest["tasks"].items()}
    added, shadowed, tags = target.add(paths, manifest["tags"])
    TASK_NAMES.add_index({n: e["perturbation"] for n, e in manifest["tasks"].items() if n not in shadowed}, shadowed)
    return IndexInfo(directory, index_id, len(added), tags, generated, skipped)
