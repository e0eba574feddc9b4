"""The data the law commands read: the bundled example, a wide CSV, or the tidy table of ``lmms-ac collect``
with A/C scores, as ``{benchmark: BenchmarkData}`` (the input options of ``lmms-ac fit | policy | plot``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from lmms_ac.law import data as D
from lmms_ac.strict_csv import read_frame


@dataclass(frozen=True)
class InputSettings:
    """One of ``example``, ``wide`` or ``table`` (with ``scores``), and how to read its columns."""

    example: Optional[str] = None  # bundled example name (law-v1)
    wide: Optional[str] = None  # wide CSV, one row per setting
    table: Optional[str] = None  # tidy results table (with scores)
    scores: Optional[str] = None  # A/C scores CSV for table
    setting_col: Optional[str] = None
    variant_col: str = "variant"
    a_col: Optional[str] = None  # may contain {benchmark}
    c_col: Optional[str] = None
    benchmarks: Optional[Tuple[str, ...]] = None  # default: all of the input
    metric: Optional[Tuple[str, ...]] = None  # TASK=METRIC assignments for table

    @property
    def given(self) -> bool:
        """Whether any input was named."""
        return any((self.example, self.wide, self.table))


def load_inputs(s: InputSettings) -> Dict[str, D.BenchmarkData]:
    """``{benchmark: BenchmarkData}`` from exactly one input."""
    import pandas as pd

    if len([x for x in (s.example, s.wide, s.table) if x]) != 1:
        raise ValueError("choose exactly one input: --example law-v1, --wide FILE, or --table TABLE --scores AC.csv")
    benches = list(s.benchmarks) if s.benchmarks else None
    if s.example:
        ex = D.EXAMPLES.get(s.example)
        if ex is None:
            from lmms_ac.registry import UnknownEntryError

            raise UnknownEntryError("example", s.example, list(D.EXAMPLES))
        if benches:
            D.resolve_benchmarks(benches, D.example_benchmarks(s.example))
        df = pd.read_csv(D.example_path(s.example))
        return D.from_wide(
            df,
            setting_col=s.setting_col or str(ex["setting_col"]),
            a_col=s.a_col or str(ex["a_col"]),
            c_col=s.c_col or str(ex["c_col"]),
            benchmarks=benches or D.example_benchmarks(s.example),
            source=f"example {s.example}",
        )
    if s.wide:
        path = Path(s.wide)
        if not path.exists():
            raise FileNotFoundError(f"wide CSV {path} does not exist")
        if not benches:
            raise ValueError("--wide needs --benchmarks b1,b2 (the score columns to fit)")
        return D.from_wide(
            read_frame(path, kind="wide CSV"),
            setting_col=s.setting_col or "setting",
            a_col=s.a_col or "A",
            c_col=s.c_col or "C",
            benchmarks=benches,
            source=str(path),
        )
    if not s.scores:
        raise ValueError("--table needs --scores AC.csv (columns variant, A, C; see --variant-col/--a-col/--c-col)")
    from lmms_ac.results.table import clean_scores, parse_assignments, read_table

    table = read_table(s.table)
    a_col, c_col = s.a_col or "A", s.c_col or "C"
    scores = clean_scores(table, benches, parse_assignments(list(s.metric) if s.metric else None))
    if "{benchmark}" in a_col or "{benchmark}" in c_col:  # e.g. A_embed_{benchmark}: one A per benchmark
        out: Dict[str, D.BenchmarkData] = {}
        for b in D.resolve_benchmarks(benches, [str(c) for c in scores.columns]):
            ac = D.read_ac_scores(
                s.scores,
                variant_col=s.variant_col,
                a_col=a_col.format(benchmark=b),
                c_col=c_col.format(benchmark=b),
                skip_missing=True,
            )
            out.update(D.from_table(scores, ac, [b], source=str(s.table)))
        return out
    ac = D.read_ac_scores(s.scores, variant_col=s.variant_col, a_col=a_col, c_col=c_col, skip_missing=True)
    return D.from_table(scores, ac, benches, source=str(s.table))
