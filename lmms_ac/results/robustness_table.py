"""The perception-study table: how much each perturbation costs each variant on each benchmark.

``robustness_table`` has one row per (variant, base_task, metric, perturbation, severity):
``severity_unit`` (what the severity measures; PatchDrop's r is always the fraction removed), ``clean`` (the clean
score; mean over clean seeds if several), ``perturbed_mean``/``perturbed_std``
over seeds, ``drop_mean``/``drop_std`` of Δ = clean - perturbed over seeds (std with ddof=1, NaN for a
single seed), ``drop_pct_mean`` (the mean Δ on the 0-100 scale of ``table.percent_factor``, decided
per metric from all its values in the table), ``n_seeds`` and ``cells_dropped`` (PatchDrop: the mean
fraction of grid cells actually removed, over seeds and images; the model reports it as the metric
``cells_dropped`` of each perturbed task, since r by attention mass removes a varying number of cells).

``average_drop`` averages ``drop_pct_mean`` over the base benchmarks (each benchmark's primary
metric) per (variant, perturbation, severity): the study's "average drop across benchmarks".
"""

from __future__ import annotations

from typing import List, Mapping, Optional

import numpy as np
import pandas as pd
from loguru import logger

from lmms_ac.results.table import CELLS_DROPPED_METRIC, is_clean, percent_factor, resolve_metric

ROBUSTNESS_COLUMNS: List[str] = [
    "variant",
    "base_task",
    "metric",
    "perturbation",
    "severity",
    "severity_unit",
    "clean",
    "perturbed_mean",
    "perturbed_std",
    "drop_mean",
    "drop_std",
    "drop_pct_mean",
    "n_seeds",
    "cells_dropped",
]


def severity_unit(perturbation: str) -> str:
    """What ``severity`` measures for a seed-free perturbation form, without importing the catalogue
    (torch): PatchDrop's r is the fraction removed, of the attention mass (Salient/Non-Salient, by
    mass: the default) or of the cells (Random, and ``_count``). Must agree with
    ``lmms_ac.robustness.grammar.severity_unit`` (tested)."""
    p = str(perturbation)
    if p.startswith(("pdrop_salient", "pdrop_nonsalient")):
        return "fraction of cells removed" if p.endswith("_count") else "fraction of attention mass removed"
    if p.startswith("pdrop_random"):
        return "fraction of cells removed"
    if p.startswith("patchshuffle"):
        return "tiles per side"
    return ""


AVERAGE_COLUMNS: List[str] = ["variant", "perturbation", "severity", "avg_drop_pct", "n_benchmarks", "benchmarks"]


def _std(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else float("nan")


def robustness_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, base task, metric, perturbation, severity): clean vs perturbed and the drop."""
    valid = table[table["value"].notna()]
    tally = valid[valid["metric"] == CELLS_DROPPED_METRIC]
    cells = tally.groupby(["variant", "base_task", "perturbation", "severity"])["value"].mean()
    valid = valid[valid["metric"] != CELLS_DROPPED_METRIC]
    clean = valid[is_clean(valid)]
    pert = valid[~is_clean(valid)]
    if pert.empty:
        raise ValueError(
            "the results table has no perturbed runs (rows whose task metadata names an lmms_ac "
            "perturbation); run the robustness tasks first"
        )
    clean_score = clean.groupby(["variant", "task", "metric"])["value"].mean()
    factors = {m: percent_factor(g["value"], m) for m, g in valid.groupby("metric")}
    rows, missing = [], set()
    keys = ["variant", "base_task", "metric", "perturbation", "severity"]
    for (variant, base, metric, p, sev), g in pert.groupby(keys, sort=True):
        ref = float(clean_score.get((variant, base, metric), np.nan))
        if np.isnan(ref):
            missing.add((variant, base, metric))
        # one value per seed (unseeded runs form one group)
        per_seed = g.groupby(g["seed"].astype("float").fillna(-1.0))["value"].mean().to_numpy()
        drops = ref - per_seed
        rows.append(
            {
                "variant": variant,
                "base_task": base,
                "metric": metric,
                "perturbation": p,
                "severity": sev,
                "severity_unit": severity_unit(p),
                "clean": ref,
                "perturbed_mean": per_seed.mean(),
                "perturbed_std": _std(per_seed),
                "drop_mean": drops.mean(),
                "drop_std": _std(drops),
                "drop_pct_mean": drops.mean() * factors[metric],
                "n_seeds": len(per_seed),
                "cells_dropped": float(cells.get((variant, base, p, sev), np.nan)),
            }
        )
    for variant, base, metric in sorted(missing):
        logger.warning(f"no clean score of {variant} on {base} ({metric}); its drops are NaN (run the clean task)")
    return pd.DataFrame(rows, columns=ROBUSTNESS_COLUMNS)


def primary_rows(detail: pd.DataFrame, metrics: Optional[Mapping[str, str]] = None) -> pd.DataFrame:
    """The rows of each base task's primary metric (``metrics`` overrides per base task)."""
    metrics = dict(metrics or {})
    keep = []
    for base, g in detail.groupby("base_task", sort=True):
        view = g.rename(columns={"base_task": "task"})
        try:
            m = resolve_metric(view, base, metrics.get(base))
        except ValueError:
            m = sorted(g["metric"].unique())[0]
            logger.warning(
                f"{base}: several metrics and no primary one known; averaging {m} (choose with --metric {base}=METRIC)"
            )
        keep.append(g[g["metric"] == m])
    return pd.concat(keep) if keep else detail.iloc[0:0]


def average_drop(detail: pd.DataFrame, metrics: Optional[Mapping[str, str]] = None) -> pd.DataFrame:
    """Mean percent-scale drop over base benchmarks per (variant, perturbation, severity)."""
    if detail.empty:
        return pd.DataFrame(columns=AVERAGE_COLUMNS)
    prim = primary_rows(detail, metrics)
    rows = []
    for (variant, p, sev), g in prim.groupby(["variant", "perturbation", "severity"], sort=True):
        ok = g[g["drop_pct_mean"].notna()]
        rows.append(
            {
                "variant": variant,
                "perturbation": p,
                "severity": sev,
                "avg_drop_pct": ok["drop_pct_mean"].mean() if len(ok) else np.nan,
                "n_benchmarks": len(ok),
                "benchmarks": ",".join(sorted(ok["base_task"])),
            }
        )
    return pd.DataFrame(rows, columns=AVERAGE_COLUMNS)
