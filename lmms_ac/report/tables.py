"""Plain data for the HTML tables of the report: columns, display text and sort keys per cell.

The templates turn an ``HtmlTable`` into markup; Python only decides what each cell says and how
it sorts (numbers by value, missing values last), never how it looks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd


@dataclass
class Column:
    label: str
    kind: str = "num"  # "num" sorts by value, "text" alphabetically
    title: str = ""  # tooltip
    cls: str = ""


@dataclass
class Cell:
    text: str
    sort: str = ""  # numeric key as text; empty = missing (sorted last)
    cls: str = ""
    title: str = ""
    shade: Optional[float] = None  # 0..1 background intensity for heat-coloured tables


@dataclass
class HtmlTable:
    columns: List[Column]
    rows: List[List[Cell]]
    id: str = ""
    caption: str = ""
    row_keys: List[str] = field(default_factory=list)  # filter key per row (e.g. the variant)

    def __len__(self) -> int:
        return len(self.rows)


def is_missing(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    try:
        return bool(isinstance(v, float) and math.isnan(v)) or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def fmt_num(v: Any, digits: Optional[int] = None) -> str:
    """A number for reading: 1 decimal from 100, 2 from 1, else 3; ``digits`` forces decimals."""
    if is_missing(v):
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    x = float(v)
    if digits is None:
        digits = 1 if abs(x) >= 100 else 2 if abs(x) >= 1 else 3
    return f"{x:.{digits}f}"


def num_cell(v: Any, digits: Optional[int] = None, cls: str = "", title: str = "") -> Cell:
    if is_missing(v):
        return Cell("", "", (cls + " missing").strip(), title or "no value")
    return Cell(fmt_num(v, digits), repr(float(v)), cls, title)


def text_cell(v: Any, cls: str = "", title: str = "") -> Cell:
    return Cell("" if is_missing(v) else str(v), "", cls, title)


def frame_table(
    df: pd.DataFrame,
    *,
    labels: Optional[Mapping[str, str]] = None,
    titles: Optional[Mapping[str, str]] = None,
    digits: Optional[Mapping[str, int]] = None,
    cell: Optional[Mapping[str, Callable[[Any, Mapping[str, Any]], Cell]]] = None,
    key: Optional[str] = None,
    id: str = "",
    caption: str = "",
) -> HtmlTable:
    """An ``HtmlTable`` of every column of ``df``: numeric columns sort by value, others as text.

    ``cell`` maps a column to a function (value, row) -> Cell for special cells.
    """
    labels, titles, digits, cell = dict(labels or {}), dict(titles or {}), dict(digits or {}), dict(cell or {})
    cols: List[Column] = []
    numeric: Dict[str, bool] = {}
    for c in df.columns:
        numeric[c] = bool(pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]))
        cols.append(Column(labels.get(c, str(c)), "num" if numeric[c] else "text", titles.get(c, "")))
    rows, keys = [], []
    for rec in df.to_dict("records"):
        out = []
        for c in df.columns:
            if c in cell:
                out.append(cell[c](rec[c], rec))
            elif numeric[c]:
                out.append(num_cell(rec[c], digits.get(c)))
            else:
                out.append(text_cell(rec[c]))
        rows.append(out)
        keys.append(str(rec[key]) if key else "")
    return HtmlTable(cols, rows, id=id, caption=caption, row_keys=keys if key else [])


def shaded(table: HtmlTable, columns: Sequence[int], lo: float, hi: float) -> HtmlTable:
    """Give the cells of ``columns`` a 0..1 shade by value between ``lo`` and ``hi``."""
    span = hi - lo if hi > lo else 1.0
    for row in table.rows:
        for j in columns:
            c = row[j]
            if c.sort:
                c.shade = max(0.0, min(1.0, (float(c.sort) - lo) / span))
    return table
