"""Inputs of the law: per benchmark, the (A, C) scores and benchmark score of every setting.

Three ways in, all ending in ``Dict[str, BenchmarkData]``:
- ``from_wide``: one wide CSV (one row per setting; ``--a-col``/``--c-col`` may be templates with
  ``{benchmark}``, e.g. ``A_embed_{benchmark}`` for the law-v1 example);
- ``from_table``: the tidy results table of ``lmms-ac collect`` plus an A/C scores CSV;
- ``load_example("law-v1")``: the bundled copy of the published law-v1 data.

A missing (empty) score means "not trained yet": the setting is predicted, not fitted. Missing A/C,
non-numeric values, duplicate settings, unknown benchmarks and missing columns are errors whose
message names the problem and the fix.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd

from lmms_ac.law.examples import EXAMPLES
from lmms_ac.registry import UnknownEntryError

# the law paper's groups (vision/OCR), its benchmark names and the names users give them come from
# the ONE benchmark registry, lmms_ac.benchmarks (Benchmark.group, .law_name, .aliases)


def canonical_benchmark(name: str) -> Optional[str]:
    """The law name of a group member given any of its known names (None if unknown)."""
    from lmms_ac.benchmarks import canonical_law_name

    return canonical_law_name(name)


def group_members(names: Sequence[str], groups: Optional[Dict[str, List[str]]] = None) -> Dict[str, List[str]]:
    """``{group: [names of the given benchmarks that belong to it]}`` (paper names recognised);
    ``groups`` defaults to the law paper's (``lmms_ac.benchmarks.law_groups``)."""
    from lmms_ac.benchmarks import law_groups

    groups = law_groups() if groups is None else groups
    out: Dict[str, List[str]] = {g: [] for g in groups}
    for n in names:
        canon = canonical_benchmark(n) or n
        for g, members in groups.items():
            if canon in members or n in members:
                out[g].append(n)
    return out


@dataclass(frozen=True)
class BenchmarkData:
    """Settings of one benchmark: names, raw A and C, raw score (NaN = not trained yet)."""

    benchmark: str
    settings: tuple
    A: np.ndarray
    C: np.ndarray
    score: np.ndarray

    @property
    def scored(self) -> np.ndarray:
        return ~np.isnan(self.score)

    @property
    def n_scored(self) -> int:
        return int(self.scored.sum())


def example_path(name: str) -> Path:
    """Path of a bundled example CSV (``law-v1``)."""
    if name not in EXAMPLES:
        raise UnknownEntryError("example", name, list(EXAMPLES))
    return Path(str(resources.files("lmms_ac") / "data" / str(EXAMPLES[name]["file"])))


def load_example(name: str = "law-v1", benchmarks: Optional[Sequence[str]] = None) -> Dict[str, BenchmarkData]:
    """The bundled example as ``{benchmark: BenchmarkData}``."""
    ex = EXAMPLES.get(name)
    path = example_path(name)
    df = pd.read_csv(path)
    return from_wide(
        df,
        setting_col=str(ex["setting_col"]),
        a_col=str(ex["a_col"]),
        c_col=str(ex["c_col"]),
        benchmarks=list(benchmarks) if benchmarks else example_benchmarks(name),
        source=str(path),
    )


def example_benchmarks(name: str) -> List[str]:
    """The benchmark columns of a bundled example (registry order)."""
    from lmms_ac.benchmarks import law_benchmarks

    listed = EXAMPLES[name].get("benchmarks")
    if listed:
        return list(listed)  # type: ignore[call-overload]
    columns = set(pd.read_csv(example_path(name), nrows=0).columns)
    return [b for b in law_benchmarks() if b in columns]  # the registry's law benchmarks the file holds


_OPTIONS = {"setting": "--setting-col", "variant": "--variant-col", "A": "--a-col", "C": "--c-col"}


def _missing_column(col: str, df: pd.DataFrame, what: str, source: str) -> ValueError:
    close = difflib.get_close_matches(col, [str(c) for c in df.columns], n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"{source}: no {what} column {col!r}{hint} Columns: {', '.join(map(str, df.columns))}. "
        f"Choose the column with {_OPTIONS.get(what, 'the matching option')}."
    )


def _numeric(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = raw.notna() & num.isna() & (raw.astype(str).str.strip() != "")
    if bad.any():
        examples = ", ".join(repr(v) for v in raw[bad].astype(str).unique()[:3])
        raise ValueError(f"{source}: column {col!r} has non-numeric values ({examples}); fix or remove them.")
    return num.to_numpy(dtype=float)


def _check_finite(values: np.ndarray, names: Sequence[str], col: str, source: str) -> None:
    """An infinite A, C or score is an error naming the rows (it would reach the law's SVD)."""
    bad = np.flatnonzero(np.isinf(values))
    if bad.size:
        rows = ", ".join(f"{names[i]} ({values[i]:g})" for i in bad[:5])
        raise ValueError(f"{source}: column {col!r} is infinite for {rows}; fix or remove those rows.")


def _check_unique(names: Sequence[str], what: str, source: str) -> None:
    seen, dups = set(), []
    for n in names:
        if n in seen and n not in dups:
            dups.append(n)
        seen.add(n)
    if dups:
        raise ValueError(
            f"{source}: duplicate {what} {', '.join(map(repr, dups))}; each {what} must appear once "
            f"(remove or rename the duplicates)."
        )


def _bench_col(template: str, benchmark: str) -> str:
    return template.format(benchmark=benchmark) if "{benchmark}" in template else template


def resolve_benchmarks(requested: Optional[Sequence[str]], available: Sequence[str]) -> List[str]:
    """Validate requested benchmark names against ``available`` (did-you-mean on unknown names)."""
    if not requested:
        return list(available)
    out = []
    for b in requested:
        if b not in available:
            raise UnknownEntryError("benchmark", b, list(available))
        out.append(b)
    return out


def from_wide(
    df: pd.DataFrame, *, setting_col: str, a_col: str, c_col: str, benchmarks: Sequence[str], source: str = "input"
) -> Dict[str, BenchmarkData]:
    """Build per-benchmark data from a wide table (one row per setting, one column per benchmark)."""
    if not benchmarks:
        raise ValueError(f"{source}: no benchmarks given; pass --benchmarks b1,b2 (columns of the table).")
    if setting_col not in df.columns:
        raise _missing_column(setting_col, df, "setting", source)
    if df.empty:
        raise ValueError(f"{source}: the table has no rows.")
    names = [str(s) for s in df[setting_col]]
    _check_unique(names, "setting", source)
    bench_cols = [b for b in benchmarks if b in df.columns]
    for b in benchmarks:
        if b not in df.columns:
            # candidates: columns that are not A/C/setting columns
            raise UnknownEntryError("benchmark", b, [str(c) for c in df.columns if c != setting_col])
    out: Dict[str, BenchmarkData] = {}
    for b in bench_cols:
        acol, ccol = _bench_col(a_col, b), _bench_col(c_col, b)
        for col, what in ((acol, "A"), (ccol, "C")):
            if col not in df.columns:
                raise _missing_column(col, df, what, source)
        A, C, y = _numeric(df, acol, source), _numeric(df, ccol, source), _numeric(df, b, source)
        for arr, col in ((A, acol), (C, ccol)):
            if np.isnan(arr).any():
                missing = [names[i] for i in np.flatnonzero(np.isnan(arr))]
                raise ValueError(
                    f"{source}: column {col!r} is empty/NaN for {', '.join(missing)}; every setting "
                    f"needs A and C scores (fill them or drop those rows)."
                )
        for arr, col in ((A, acol), (C, ccol), (y, b)):
            _check_finite(arr, names, col, source)
        out[b] = BenchmarkData(b, tuple(names), A, C, y)
    return out


def read_ac_scores(
    path: Union[str, Path],
    *,
    variant_col: str = "variant",
    a_col: str = "A",
    c_col: str = "C",
    allow_missing: bool = False,
    skip_missing: bool = False,
) -> pd.DataFrame:
    """Read an A/C scores CSV into a frame indexed by variant with columns A and C.

    ``allow_missing``: a variant without an A or C score (or a score file holding no C at all) keeps
    NaN there, with a warning naming the variants, instead of failing (the leaderboard shows what it
    has). ``skip_missing`` (the law and the policy, which need both): such a variant is left out with a
    warning naming it; an error only when no variant has both.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"A/C scores file {path} does not exist")
    from lmms_ac.scores.store import read_scores_frame

    df = read_scores_frame(path)  # a score store is validated row by row (issue 9): never a silent partial read
    return ac_scores_from_frame(
        df,
        str(path),
        variant_col=variant_col,
        a_col=a_col,
        c_col=c_col,
        allow_missing=allow_missing,
        skip_missing=skip_missing,
    )


def ac_scores_from_frame(
    df: pd.DataFrame,
    path: str,
    *,
    variant_col: str = "variant",
    a_col: str = "A",
    c_col: str = "C",
    allow_missing: bool = False,
    skip_missing: bool = False,
) -> pd.DataFrame:
    """:func:`read_ac_scores` of a frame already read by ``lmms_ac.scores.store.read_scores_frame`` (``path``
    names it in messages): a score store (long: variant, score, value...) is pivoted, a wide table used as is."""
    if {"score", "value", variant_col} <= set(df.columns) and a_col not in df.columns:
        df = _pivot_score_store(df, variant_col, (a_col, c_col), str(path), allow_missing or skip_missing)
    for col, what in ((variant_col, "variant"), (a_col, "A"), (c_col, "C")):
        if col not in df.columns:
            raise _missing_column(col, df, what, str(path))
    names = [str(v) for v in df[variant_col]]
    _check_unique(names, "variant", str(path))
    A, C = _numeric(df, a_col, str(path)), _numeric(df, c_col, str(path))
    for arr, col in ((A, a_col), (C, c_col)):
        _check_finite(arr, names, col, str(path))
    if skip_missing:
        incomplete = np.isnan(A) | np.isnan(C)
        if incomplete.all():
            raise ValueError(
                f"{path}: no variant has both an {a_col!r} and a {c_col!r} score; the law needs both "
                f"(run lmms-ac score-a / score-c)."
            )
        if incomplete.any():
            from loguru import logger

            left = [n for n, m in zip(names, incomplete) if m]
            logger.warning(
                f"{path}: left out of the law and the policy (no {a_col!r} or no {c_col!r} score): {', '.join(left)}"
            )
            keep = ~incomplete
            names = [n for n, k in zip(names, keep) if k]
            A, C = A[keep], C[keep]
    for arr, col in ((A, a_col), (C, c_col)):
        if np.isnan(arr).any():
            missing = [names[i] for i in np.flatnonzero(np.isnan(arr))]
            if allow_missing:
                from loguru import logger

                logger.warning(f"{path}: no {col!r} score for {', '.join(missing)}; left blank")
                continue
            raise ValueError(
                f"{path}: column {col!r} is empty/NaN for {', '.join(missing)}; fill them or drop those rows."
            )
    return pd.DataFrame({"A": A, "C": C}, index=pd.Index(names, name="variant"))


def _pivot_score_store(
    df: pd.DataFrame, variant_col: str, score_names: Sequence[str], source: str, allow_missing: bool = False
) -> pd.DataFrame:
    """The long scores CSV of ``score-a``/``score-c`` (variant, score, value, time...) -> one row per
    variant with a column per score name; where a variant has several rows of a score (other
    configurations), the newest one counts. ``allow_missing``: a score with no rows at all becomes an
    empty column (unless every score is missing)."""
    known = sorted(set(map(str, df["score"])))
    absent = [n for n in score_names if n not in known]
    if absent and (not allow_missing or len(absent) == len(score_names)):
        name = absent[0]
        raise ValueError(
            f"{source}: no {name!r} rows among the scores {known}; run lmms-ac score-a / score-c, "
            f"or choose --a-col/--c-col among {known}"
        )
    if absent:
        from loguru import logger

        logger.warning(f"{source}: no {', '.join(map(repr, absent))} scores for any variant; left blank")
    from lmms_ac.scores.store import newest_rows

    rows = df[df["score"].isin(score_names)]
    newest = newest_rows(rows, variant_col)
    if len(newest) < len(rows):
        from loguru import logger

        logger.info(
            f"{source}: {len(rows) - len(newest)} older score rows superseded by newer ones of the same variant"
        )
    wide = newest.pivot(index=variant_col, columns="score", values="value")
    for name in absent:
        wide[name] = np.nan
    return wide.reset_index()


def from_table(
    scores: pd.DataFrame, ac: pd.DataFrame, benchmarks: Optional[Sequence[str]] = None, source: str = "results table"
) -> Dict[str, BenchmarkData]:
    """Combine a wide score frame (index variant, one column per benchmark; see
    ``lmms_ac.results.table.clean_scores``) with A/C scores (index variant, columns A, C).

    Every variant of ``ac`` is a setting; variants with scores but no A/C are skipped with a warning.
    """
    from loguru import logger

    benchmarks = resolve_benchmarks(benchmarks, [str(c) for c in scores.columns])
    if not benchmarks:
        raise ValueError(f"{source}: no clean benchmark scores found; collect results first (lmms-ac collect).")
    no_ac = sorted(set(map(str, scores.index)) - set(map(str, ac.index)))
    if no_ac:
        logger.warning(f"variants with scores but no A/C scores are left out of the law: {', '.join(no_ac)}")
    names = [str(v) for v in ac.index]
    out = {}
    for b in benchmarks:
        y = scores[b].reindex(names).to_numpy(dtype=float)
        out[b] = BenchmarkData(b, tuple(names), ac["A"].to_numpy(float), ac["C"].to_numpy(float), y)
    return out
