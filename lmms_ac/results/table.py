"""The tidy results table: its schema, reading/writing it, and the clean-score view everything uses.

One row per (variant, task, metric[, perturbation, severity, seed]) with columns ``TABLE_COLUMNS``:

- ``variant``: the model variant (``variant=`` of model_args, else the basename of ``pretrained=``,
  remapped through the optional mapping file);
- ``task``: the lmms-eval task (or group) name; ``metric``: the metric name (``name,filter`` when the
  filter is not ``none``); ``value``/``stderr`` floats (stderr NaN when lmms-eval wrote "N/A");
- ``n``: evaluated documents; ``perturbation`` (``none`` for clean runs), ``severity`` (string,
  empty when unset), ``seed`` (nullable int), ``base_task`` (the clean task a perturbed task derives
  from; the task itself for clean runs);
- ``lmms_eval_version``, ``config_hash`` (of model, model_args, limit, gen_kwargs and the task
  config), ``time`` (ISO timestamp of the run), ``source`` (the results file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

TABLE_COLUMNS: List[str] = [
    "variant",
    "task",
    "metric",
    "value",
    "stderr",
    "n",
    "perturbation",
    "severity",
    "seed",
    "base_task",
    "lmms_eval_version",
    "config_hash",
    "time",
    "source",
]
CLEAN = "none"
# PatchDrop: mean fraction of grid cells actually removed, reported by lmms_ac_llava per perturbed task
CELLS_DROPPED_METRIC = "cells_dropped"

# where a law benchmark name is found in lmms-eval results and each task's headline metric: the ONE
# benchmark registry (lmms_ac.benchmarks: sources(), primary_metric())
#: maximum of metrics that are not on a 0-1 or 0-100 scale (for the percent scale)
METRIC_MAX: Dict[str, float] = {"mme_perception_score": 2000.0, "mme_cognition_score": 800.0}


def empty_table() -> pd.DataFrame:
    return _coerce(pd.DataFrame({c: [] for c in TABLE_COLUMNS}))


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in (
        "variant",
        "task",
        "metric",
        "perturbation",
        "severity",
        "base_task",
        "lmms_eval_version",
        "config_hash",
        "time",
        "source",
    ):
        df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    df["perturbation"] = df["perturbation"].replace("", CLEAN)
    df["base_task"] = df["base_task"].where(df["base_task"] != "", df["task"])
    for c in ("value", "stderr"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    for c in ("n", "seed"):
        df[c] = pd.to_numeric(df[c], errors="coerce").round().astype("Int64")
    return df[TABLE_COLUMNS].reset_index(drop=True)


def validate_table(df: pd.DataFrame, source: str = "table") -> pd.DataFrame:
    """Check the columns of a tidy table and coerce dtypes; raise ValueError naming what is missing."""
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{source} is not an lmms-ac results table: missing column(s) {', '.join(missing)}; "
            f"create it with `lmms-ac collect RESULTS... --out table.csv`."
        )
    return _coerce(df)


#: how to repair a damaged table (appended to every validation message)
TABLE_REPAIR = (
    "Fix or delete that row in a copy of the file, or rebuild the table from the lmms-eval results "
    "with `lmms-ac collect RESULTS... --out table.csv`; the file was not changed."
)


def _table_validators() -> Dict[str, Callable[[str], None]]:
    from lmms_ac import strict_csv as S

    return {
        "variant": S.nonempty,
        "task": S.nonempty,
        "metric": S.nonempty,
        "value": S.optional_number,
        "stderr": S.optional_number,
        "n": S.optional_int,
        "seed": S.optional_int,
        "config_hash": S.nonempty,
    }


def read_table(path: Union[str, Path]) -> pd.DataFrame:
    """Read a table written by ``lmms-ac collect``, validating every row first (columns, field
    counts, numbers, config hash present): a damaged file is refused with its line number."""
    from lmms_ac.strict_csv import read_records

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results table {path} does not exist; create it with `lmms-ac collect`")
    if path.is_dir():
        raise ValueError(f"results table {path} is a directory; give the CSV written by `lmms-ac collect --out`")
    records = read_records(
        path, required=TABLE_COLUMNS, kind="lmms-ac results table", repair=TABLE_REPAIR, validators=_table_validators()
    )
    df = pd.DataFrame(records.rows, columns=records.columns, dtype=object)
    df = df.replace({"": np.nan})
    table = validate_table(df, str(path))
    if table.empty:
        raise ValueError(f"results table {path} has no rows")
    return collapse_duplicates(table, f"results table {path}")


#: what identifies one row of the table (``lmms-ac collect`` keeps one row per key: the newest rerun)
ROW_KEY: List[str] = ["variant", "task", "metric", "perturbation", "severity", "seed"]


def collapse_duplicates(table: pd.DataFrame, source: str = "the results table") -> pd.DataFrame:
    """``table`` with rows repeated exactly (same key, value, stderr and n) kept once. The same key with different
    values (two tables concatenated, a rerun pasted in) is a ValueError naming the rows: averaging them would
    silently mix different runs into one score."""
    if not table.duplicated(ROW_KEY, keep=False).any():
        return table
    table = table.drop_duplicates(ROW_KEY + ["value", "stderr", "n"]).reset_index(drop=True)
    conflict = table[table.duplicated(ROW_KEY, keep=False)]
    if conflict.empty:
        return table
    groups = list(conflict.groupby(ROW_KEY, dropna=False, sort=False)["value"])
    shown = []
    for key, values in groups[:5]:
        v, t, m, pert, sev, seed = key
        where = " / ".join(
            str(x)
            for x in (v, t, m, None if pert == CLEAN else pert, sev or None, None if pd.isna(seed) else f"seed {seed}")
            if x
        )
        shown.append(f"{where}: {', '.join(f'{x:g}' for x in values)}")
    more = f" (and {len(groups) - 5} more)" if len(groups) > 5 else ""
    raise ValueError(
        f"{source} has {len(groups)} row(s) given more than once with different values: {'; '.join(shown)}{more}. "
        "One row per (variant, task, metric, perturbation, severity, seed) is expected; keep the right one of each "
        "(`lmms-ac collect` keeps the newest rerun), or rename the variant of one run"
    )


def table_to_csv(df: pd.DataFrame) -> str:
    """The table as CSV text that ``read_table`` reads back exactly (see ``strict_csv.frame_to_csv``)."""
    from lmms_ac.strict_csv import frame_to_csv

    return frame_to_csv(validate_table(df))


def is_clean(df: pd.DataFrame) -> pd.Series:
    return df["perturbation"].isin([CLEAN, ""])


def resolve_metric(df: pd.DataFrame, task: str, metric: Optional[str] = None) -> str:
    """The metric to use for ``task``: the given one, the task's only metric, or its primary metric."""
    metrics = sorted(df.loc[df["task"] == task, "metric"].unique())
    if not metrics:
        raise ValueError(
            f"task {task!r} has no usable rows here (a clean run with a value is needed); run the clean task too, "
            "or leave it out"
        )
    if metric is not None:
        if metric not in metrics:
            from lmms_ac.registry import UnknownEntryError

            raise UnknownEntryError(f"metric of task {task!r}", metric, metrics)
        return metric
    if len(metrics) == 1:
        return metrics[0]
    from lmms_ac.benchmarks import primary_metric

    primary = primary_metric(task)
    if primary in metrics:
        return primary
    raise ValueError(
        f"task {task!r} reports several metrics ({', '.join(metrics)}); choose one with --metric {task}={metrics[0]}"
    )


def _benchmark_source(clean: pd.DataFrame, bench: str, metric: Optional[str]) -> Tuple[str, str]:
    tasks = set(clean["task"])
    if bench in tasks:
        return bench, resolve_metric(clean, bench, metric)
    from lmms_ac.benchmarks import sources

    for task, m in sources(bench):
        if task in tasks and (m in set(clean.loc[clean["task"] == task, "metric"])):
            return task, metric or m
    from lmms_ac.registry import UnknownEntryError

    raise UnknownEntryError("benchmark", bench, sorted(tasks))


def clean_scores(
    table: pd.DataFrame, benchmarks: Optional[Sequence[str]] = None, metrics: Optional[Mapping[str, str]] = None
) -> pd.DataFrame:
    """Variant x benchmark frame of clean scores (mean over seeds if a clean run was seeded).

    ``benchmarks`` defaults to every clean task, by name (not by the table's row order, which follows
    the results files' names); a law benchmark name (e.g. ``seed_image``) is looked up through
    ``lmms_ac.benchmarks.sources``. ``metrics`` maps a benchmark/task to its metric.
    """
    metrics = dict(metrics or {})
    table = collapse_duplicates(table)
    clean = table[is_clean(table) & table["value"].notna()]
    if clean.empty:
        raise ValueError(
            "the results table has no clean (unperturbed) scores, only perturbed runs; run the clean tasks too "
            "(e.g. lmms-eval --tasks mme) and collect them into the table"
        )
    benches = list(benchmarks) if benchmarks else sorted(set(clean["task"]))
    cols = {}
    for b in benches:
        task, metric = _benchmark_source(clean, b, metrics.get(b))
        sel = clean[(clean["task"] == task) & (clean["metric"] == metric)]
        cols[b] = sel.groupby("variant")["value"].mean()
    out = pd.DataFrame(cols)
    out.index.name = "variant"
    return out


def benchmark_metric(table: pd.DataFrame, bench: str, metric: Optional[str] = None) -> Tuple[str, str]:
    """(task, metric) a benchmark name resolves to in ``table`` (clean rows)."""
    return _benchmark_source(table[is_clean(table)], bench, metric)


def percent_factor(values: Union[pd.Series, np.ndarray], metric: str) -> float:
    """Factor that puts ``metric`` on a 0-100 scale: 100/max for known maxima (MME); 100 when every
    value lies in [-1, 1] (fractions); else 1 (already in percent)."""
    if metric in METRIC_MAX:
        return 100.0 / METRIC_MAX[metric]
    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    return 100.0 if finite.size and np.all(np.abs(finite) <= 1.0) else 1.0


def to_percent(values: Union[pd.Series, np.ndarray], metric: str) -> Union[pd.Series, np.ndarray]:
    """``values`` on the 0-100 scale of ``percent_factor``."""
    return values * percent_factor(values, metric)


def parse_assignments(items: Optional[Sequence[str]], what: str = "--metric") -> Dict[str, str]:
    """Parse repeated ``KEY=VALUE`` options."""
    out: Dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out
