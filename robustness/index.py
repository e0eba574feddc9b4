"""Make the generated robustness tasks visible to an lmms-eval TaskManager: find the base tasks'
YAMLs in its index, reuse (or generate) the cached directory for their hash, and add its tasks and
tags through the adapter of lmms-eval internals (``lmms_ac.plugin``). Called for every TaskManager
by the plugin hook (``lmms_ac.tasks.extend_task_index``)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from loguru import logger

from lmms_ac.benchmarks import all_benchmarks

from . import task_cache
from .generation import generate, index_hash, task_specs
from .names import TASK_NAMES
from .plugins import ensure_plugins
from .variants import VariantFamily, selected_families


@dataclass
class IndexInfo:
    """What :func:`extend_index` did."""

    directory: Path
    hash: str
    tasks: int
    tags: int
    generated: bool
    skipped: List[str] = field(default_factory=list)


def extend_index(task_manager, families: Optional[Sequence[VariantFamily]] = None) -> IndexInfo:
    """Add the generated robustness tasks and their tags to ``task_manager``'s index.

    Bases missing from the index (e.g. ``include_defaults=False``) are skipped; names the index
    already has (a user YAML of the same name) win over ours. Generates the YAMLs only when the
    hash changed; otherwise reads one ``index.json``.
    """
    from lmms_ac.plugin import add_to_task_index, task_index

    ensure_plugins()
    families = selected_families() if families is None else list(families)
    index = task_index(task_manager)
    base_yamls = {}
    skipped: List[str] = []
    for bench in all_benchmarks():
        entry = index.get(bench.task)
        if entry is None:
            skipped.append(bench.task)
            continue
        if entry.get("type") != "task" or not isinstance(entry.get("yaml_path"), str):
            logger.warning(f"lmms-ac: benchmark {bench.key!r} maps to {bench.task!r}, a {entry.get('type')} of "
                           "lmms-eval, not a single task; no robustness variants generated for it")
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
    added, shadowed, tags = add_to_task_index(task_manager, paths, manifest["tags"])
    TASK_NAMES.add_index({n: e["perturbation"] for n, e in manifest["tasks"].items() if n not in shadowed}, shadowed)
    info = IndexInfo(directory, index_id, len(added), tags, generated, skipped)
    task_manager._lmms_ac_robustness = info  # ours, not lmms-eval's: what the hook did
    return info
