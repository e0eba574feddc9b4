"""What ``lmms_ac_llava`` measured while lmms-eval ran, written into lmms-eval's results so ``collect``
reads it like any task metadata (called by the plugin's ``evaluate`` hook, see ``lmms_ac.entry_point``):

- PatchDrop's r is a fraction of cells or of attention mass, so the fraction of cells actually removed
  varies per image. The model tallies it per task (``HookFactory.drops``); it becomes the metric
  ``cells_dropped`` (mean over every image of every rank), which the robustness table shows beside
  each drop.
- A perturbation given as a model argument is the catalogue object the hooks applied; its metadata
  (``perturbation_metadata``, the same block a generated task carries) is written into the task's
  ``configs[task].metadata``, so collect never re-parses the model-argument string for these runs.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from lmms_ac.results.collect import lmms_ac_metadata
from lmms_ac.results.table import CELLS_DROPPED_METRIC
from lmms_ac.robustness.grammar import perturbation_metadata


def finish_results(results: Optional[Dict[str, Any]], lm: Any) -> None:
    """Add ``lm``'s drop tally and model-argument perturbation to ``results`` (other models: untouched)."""
    factory = getattr(lm, "hook_factory", None)
    tally = getattr(factory, "drops", None)
    if tally is not None:
        add_drop_metrics(results, gather_tally(tally.totals()))
    add_perturbation_metadata(results, getattr(factory, "default", None))


def gather_tally(totals: Mapping[str, Tuple[float, int]]) -> Dict[str, Tuple[float, int]]:
    """Sum the per-task (sum of fractions, images) over data-parallel ranks (every rank calls evaluate)."""
    try:
        import torch.distributed as dist

        parts = [None] * dist.get_world_size() if dist.is_available() and dist.is_initialized() else None
    except ImportError:
        parts = None
    if parts is None:
        return dict(totals)
    dist.all_gather_object(parts, dict(totals))
    merged: Dict[str, Tuple[float, int]] = {}
    for part in parts:
        for task, (total, n) in part.items():
            t0, n0 = merged.get(task, (0.0, 0))
            merged[task] = (t0 + total, n0 + n)
    return merged


def add_perturbation_metadata(results: Optional[Dict[str, Any]], perturbation: Any) -> None:
    """Stamp a model-argument perturbation's metadata on every task of the run that carries none of its own
    (a generated robustness task's perturbation takes precedence in the hooks, and keeps its metadata)."""
    if not results or perturbation is None or not isinstance(results.get("configs"), dict):
        return
    for task, cfg in results["configs"].items():
        if not isinstance(cfg, dict) or lmms_ac_metadata(cfg):
            continue
        meta = cfg.get("metadata")
        block = {"lmms_ac": perturbation_metadata(perturbation, task)}
        if isinstance(meta, list):
            meta.append(block)
        elif isinstance(meta, dict):
            meta.update(block)
        else:
            cfg["metadata"] = [block]


def add_drop_metrics(results: Optional[Dict[str, Any]], totals: Mapping[str, Tuple[float, int]]) -> None:
    """Write ``cells_dropped,none`` into each tallied task's lmms-eval results (rank 0 holds them)."""
    if not results or "results" not in results:
        return
    for task, (total, n) in totals.items():
        if task in results["results"] and n:
            results["results"][task][f"{CELLS_DROPPED_METRIC},none"] = total / n
            results["results"][task][f"{CELLS_DROPPED_METRIC}_stderr,none"] = "N/A"
