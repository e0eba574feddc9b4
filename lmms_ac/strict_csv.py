"""Strict reading of the CSV files the project keeps (scores store, tidy results table).

A CSV that was cut short (a killed writer, a full disk, a bad copy) or edited by hand must never be
read as if it were whole: :func:`read_records` checks the header, the number of fields of every
record, the final newline and each cell with the caller's validators, and raises
:class:`CsvFormatError` naming the file, the line and how to repair it. Nothing is ever rewritten here.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

Validator = Callable[[str], None]


class CsvFormatError(ValueError):
    """A CSV file is damaged or not of the expected kind; the message names file, line and fix."""


@dataclass
class Records:
    """A validated CSV: header and rows (dicts of strings), with each row's first line number."""

    columns: List[str]
    rows: List[Dict[str, str]]
    lines: List[int]


def _fail(path: Path, line: Optional[int], problem: str, repair: str) -> CsvFormatError:
    where = f"{path}, line {line}" if line else str(path)
    return CsvFormatError(f"{where}: {problem}. {repair}")


def read_records(
    path: Union[str, Path],
    *,
    required: Sequence[str],
    kind: str,
    repair: str,
    validators: Optional[Mapping[str, Validator]] = None,
    final_newline: bool = True,
) -> Records:
    """Read ``path`` strictly. ``required`` columns must be in the header; ``validators[col](cell)``
    raises ValueError for a bad cell. ``kind`` names the file type in messages ("scores CSV");
    ``repair`` says how to fix a damaged file (appended to every message). ``final_newline``: a
    file we write always ends with one, so its absence means the last row may be cut short (turn it
    off for hand-written files, where editors often leave it out)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise _fail(path, line, f"not UTF-8 text (byte {err.start})", repair) from None
    if not text.strip():
        raise _fail(path, None, f"is empty, so it is not a {kind} (it may have been cut short)", repair)
    if "\x00" in text:
        raise _fail(path, text[: text.index("\x00")].count("\n") + 1, "holds a NUL byte (a damaged write?)", repair)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: List[List[str]] = []
    starts: List[int] = []
    previous = 0
    try:
        for record in reader:
            if record:  # blank lines are skipped, as every CSV reader does
                records.append(record)
                starts.append(previous + 1)
            previous = reader.line_num
    except csv.Error as err:
        raise _fail(path, previous + 1, f"malformed CSV ({err}); the row may have been cut short", repair) from None
    header = [c.strip() for c in records[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise _fail(path, 1, f"is not a {kind} (missing column(s) {', '.join(missing)})", repair)
    dups = sorted({c for c in header if header.count(c) > 1})
    if dups or "" in header:
        problem = f"duplicate column(s) {', '.join(dups)}" if dups else "an empty column name"
        raise _fail(path, 1, f"header has {problem}", repair)
    if final_newline and len(records) > 1 and not text.endswith(("\n", "\r")):
        raise _fail(
            path,
            starts[-1],
            "the file does not end with a newline, so its last row may have been cut short by an interrupted write",
            repair + " If that row is complete, add the missing newline at the end of the file",
        )
    checks = dict(validators or {})
    rows: List[Dict[str, str]] = []
    for record, line in zip(records[1:], starts[1:]):
        if len(record) != len(header):
            raise _fail(
                path,
                line,
                f"{len(record)} field(s) where the header has {len(header)} (a row cut short, or an unquoted comma)",
                repair,
            )
        row = dict(zip(header, record))
        for col, check in checks.items():
            if col in row:
                try:
                    check(row[col])
                except ValueError as err:
                    raise _fail(path, line, f"column {col!r}: {err}", repair) from None
        rows.append(row)
    return Records(header, rows, starts[1:])


def rows_to_csv(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """CSV text ("\\n" line ends, minimal quoting) that :func:`read_records` reads back exactly:
    Python's csv writer with a "\\n" terminator leaves a lone carriage return unquoted, which splits
    the row on reading, so rows holding one are written fully quoted."""
    buf = io.StringIO()
    minimal = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for cells in [list(columns), *rows]:
        cells = ["" if c is None else str(c) for c in cells]
        (quoted if any("\r" in c for c in cells) else minimal).writerow(cells)
    return buf.getvalue()


def frame_to_csv(df) -> str:
    """``df.to_csv(index=False)``, with strings quoted when a cell holds a carriage return (see
    :func:`rows_to_csv`): use it for every CSV that is read back."""
    has_cr = any("\r" in str(c) for c in df.columns) or bool(
        len(df) and df.astype(str).apply(lambda col: col.str.contains("\r", regex=False)).to_numpy().any()
    )
    return df.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC if has_cr else csv.QUOTE_MINIMAL)


def read_frame(
    path: Union[str, Path],
    *,
    kind: str = "CSV",
    repair: str = "Fix that row and rerun.",
    required: Sequence[str] = (),
    validators: Optional[Mapping[str, Validator]] = None,
    final_newline: bool = False,
):
    """:func:`read_records` then a pandas frame with pandas' usual type inference (numbers become
    floats/ints, empty cells NaN): for hand-written tables (A/C scores, wide law tables)."""
    import pandas as pd

    path = Path(path)
    records = read_records(
        path, required=required, kind=kind, repair=repair, validators=validators, final_newline=final_newline
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(records.columns)
    writer.writerows([row[c] for c in records.columns] for row in records.rows)
    return pd.read_csv(io.StringIO(buf.getvalue()))


# ------------------------------------------------------------------ cell validators
def nonempty(cell: str) -> None:
    if not cell.strip():
        raise ValueError("empty")


def number(cell: str) -> None:
    """A float, as Python writes it (``nan`` included; ``inf`` is refused: no score is infinite, and one
    would reach the law's least squares)."""
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{cell!r} is not a number") from None
    if math.isinf(value):
        raise ValueError(f"{cell!r} is infinite; a score must be a finite number")


def optional_number(cell: str) -> None:
    if cell.strip() and cell.strip().upper() != "N/A":
        number(cell)


def optional_int(cell: str) -> None:
    if not cell.strip():
        return
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{cell!r} is not an integer") from None
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{cell!r} is not an integer")


def optional_json(cell: str) -> None:
    if cell.strip():
        try:
            json.loads(cell)
        except ValueError:
            raise ValueError("not valid JSON (the cell may have been cut short)") from None
