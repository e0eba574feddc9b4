"""The leaderboard: one row per variant, a pure function of the tidy results table (+ A/C scores).

Schema (``LEADERBOARD_COLUMNS``, in this order; ``{benchmark}`` expands to one column per benchmark
in the requested order, ``{perturbation}`` to one column per perturbation, sorted):

- ``variant`` (str);
- ``A``, ``C`` (float; empty when the variant has no such score: a variant with A but no C is listed
  with C blank and no law prediction);
- ``pred_{benchmark}``: the law's prediction (degree-2 polynomial of min-max normalised (A, C),
  least squares on the variants that have both a clean score and A/C; minimum-norm while
  underdetermined); empty where not computable (no A/C, or fewer than 2 fitted variants);
- ``{benchmark}``: the clean score (the benchmark's primary metric, mean over clean seeds);
- ``average``: mean over the variant's available benchmarks of the score on a 0-100 scale
  (``table.percent_factor``: MME divided by its maximum, 0-1 metrics x100);
- ``n_benchmarks``: how many benchmarks the average covers;
- ``rank``: 1 = highest average (ties share the lower rank); empty without an average;
- ``drop_{perturbation}``: the clean - perturbed drop on the 0-100 scale (each base benchmark's
  primary metric), averaged over seeds, severities and the base benchmarks that have the perturbation.

Rows are sorted by rank (unranked last), then variant.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from loguru import logger

from lmms_ac.results.table import benchmark_metric, clean_scores, is_clean, percent_factor

LEADERBOARD_COLUMNS: List[str] = [
    "variant",
    "A",
    "C",
    "pred_{benchmark}",
    "{benchmark}",
    "average",
    "n_benchmarks",
    "rank",
    "drop_{perturbation}",
]


def leaderboard_columns(benchmarks: Sequence[str], perturbations: Sequence[str]) -> List[str]:
    """``LEADERBOARD_COLUMNS`` with the templates expanded."""
    out: List[str] = []
    for col in LEADERBOARD_COLUMNS:
        if "{benchmark}" in col:
            out += [col.format(benchmark=b) for b in benchmarks]
        elif "{perturbation}" in col:
            out += [col.format(perturbation=p) for p in sorted(perturbations)]
        else:
            out.append(col)
    return out


def _law_predictions(scores: pd.DataFrame, ac: pd.DataFrame, bench: str) -> pd.Series:
    from lmms_ac.law.data import BenchmarkData
    from lmms_ac.law.fit import law_predictions

    full = ac.dropna(subset=["A", "C"])
    names = [str(v) for v in full.index]
    if not names:
        return pd.Series(np.nan, index=[str(v) for v in ac.index])
    y = scores[bench].reindex(names).to_numpy(dtype=float)
    data = BenchmarkData(bench, tuple(names), full["A"].to_numpy(float), full["C"].to_numpy(float), y)
    if data.n_scored < 2:
        logger.warning(f"{bench}: {data.n_scored} variant(s) with score and A/C; no law prediction")
        return pd.Series(np.nan, index=names)
    return pd.Series(law_predictions(data, "minmax"), index=names)


def leaderboard(
    table: pd.DataFrame,
    ac: Optional[pd.DataFrame] = None,
    benchmarks: Optional[Sequence[str]] = None,
    metrics: Optional[Mapping[str, str]] = None,
    *,
    clean: Optional[pd.DataFrame] = None,
    predictions: Optional[Mapping[str, pd.Series]] = None,
    robustness: Optional[pd.DataFrame] = None,
) -> pd.DataFrame:
    """Build the leaderboard (see module doc). ``ac``: index variant, columns A and C.

    A caller that already has them (the report's ``Analysis``) passes the pieces instead of having them
    computed again: ``clean`` (``clean_scores`` of these benchmarks), ``predictions`` (per benchmark, the law's
    min-max prediction per variant) and ``robustness`` (``robustness_table`` of ``table``)."""
    scores = clean if clean is not None else clean_scores(table, benchmarks, metrics)
    benches = list(scores.columns)
    variants = list(
        dict.fromkeys(
            list(scores.index)
            + ([str(v) for v in ac.index] if ac is not None else [])
            + sorted(table["variant"].unique())
        )
    )
    out = pd.DataFrame(index=pd.Index(variants, name="variant"))
    out["A"] = ac["A"].reindex(variants).to_numpy(float) if ac is not None else np.nan
    out["C"] = ac["C"].reindex(variants).to_numpy(float) if ac is not None else np.nan
    for b in benches:
        if ac is None:
            out[f"pred_{b}"] = np.nan
            continue
        pred = predictions[b] if predictions is not None and b in predictions else _law_predictions(scores, ac, b)
        out[f"pred_{b}"] = pred.reindex(variants).to_numpy()
    pct = {}
    for b in benches:
        out[b] = scores[b].reindex(variants).to_numpy(float)
        _, metric = benchmark_metric(table, b, (metrics or {}).get(b))
        pct[b] = out[b] * percent_factor(scores[b].to_numpy(float), metric)
    pct_df = pd.DataFrame(pct, index=out.index)
    out["average"] = pct_df.mean(axis=1, skipna=True)
    out["n_benchmarks"] = pct_df.notna().sum(axis=1).astype(int)
    out["rank"] = out["average"].rank(ascending=False, method="min").astype("Int64")
    perts: List[str] = []
    if (~is_clean(table)).any():
        from lmms_ac.results.robustness_table import primary_rows, robustness_table

        detail = robustness if robustness is not None else robustness_table(table)
        drops = primary_rows(detail, metrics).groupby(["variant", "perturbation"])["drop_pct_mean"].mean()
        perts = sorted(detail["perturbation"].unique())
        for p in perts:
            out[f"drop_{p}"] = [drops.get((v, p), np.nan) for v in variants]
    cols = leaderboard_columns(benches, perts)
    out = out.reset_index()
    out = out.sort_values(["rank", "variant"], na_position="last", kind="stable").reset_index(drop=True)
    return out[cols]


def _fmt(v: object, digits: int) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    return str(v)


def to_markdown(df: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (numbers rounded to ``digits``)."""
    cols = [str(c) for c in df.columns]
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" if df[c].dtype == object else "---:" for c in df.columns) + "|",
    ]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, digits).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"
