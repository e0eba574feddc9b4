"""Per-group probe maps from the tidy table: patch information loss and importance, M x M arrays
ready for a heat map (docs/METHODS.md#token-group-and-noise-probes)."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pandas as pd


def task_scores(table: pd.DataFrame, variant: str, metric: str) -> Dict[str, float]:
    """task -> mean value of ``metric`` for ``variant`` (seeded repeats of a task averaged)."""
    rows = table[(table["variant"].astype(str) == variant) & (table["metric"] == metric)]
    if rows.empty:
        known = sorted(set(table["variant"].astype(str)))
        metrics = sorted(set(table.loc[table["variant"].astype(str) == variant, "metric"]))
        raise ValueError(f"no {metric!r} rows for variant {variant!r} (variants: {known}; its metrics: {metrics})")
    return rows.groupby("task")["value"].mean().to_dict()


def probe_map(
    table: pd.DataFrame, benchmark: str, m: int, metric: str, variant: Optional[str] = None, kind: str = "pil"
) -> np.ndarray:
    """``kind='pil'``: (clean - score) / clean per token group from the ``<benchmark>_tokgroup_m{m}_g{g}``
    tasks; ``kind='importance'``: the importance score per group from the ``toknoise`` draws."""
    from lmms_ac.robustness.probes import group_importance, patch_information_loss

    variants = sorted(set(table["variant"].astype(str)))
    if variant is None:
        if len(variants) != 1:
            raise ValueError(f"the table holds several variants {variants}; choose one with --variant")
        variant = variants[0]
    scores = task_scores(table, variant, metric)
    try:
        if kind == "pil":
            return patch_information_loss(scores, benchmark, m)
        if kind == "importance":
            return group_importance(scores, benchmark, m)
    except KeyError as err:
        raise ValueError(
            f"missing probe results for {variant!r}: {err.args[0]}; run the tasks "
            f"{benchmark}_tokgroup_m{m}_g* (pil) or {benchmark}_toknoise_m{m}_g*_s* (importance) "
            f"and the clean {benchmark} with lmms-eval, then collect again"
        ) from None
    raise ValueError(f"unknown probe map kind {kind!r}; choose 'pil' or 'importance'")
