"""Writing reports: atomically, never over an existing file unless asked, always with provenance.

CSV and Markdown outputs get a ``<file>.provenance.json`` sidecar (package versions, git commit,
config hash, the options that produced the file); JSON outputs embed it under ``provenance``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Union

import pandas as pd

from lmms_ac.io import OutputExistsError, atomic_write_text, provenance

PathLike = Union[str, Path]


def sidecar(path: PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".provenance.json")


def check_output(path: PathLike, overwrite: bool) -> None:
    """Refuse an output path that is a folder, or a file that exists when not ``overwrite`` (the fix in the message)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a folder; give a file path for the output (e.g. {p / 'out.csv'})")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p} already exists; choose another path or pass --overwrite to replace it")


def write_text_report(text: str, path: PathLike, config: Dict[str, Any], overwrite: bool = False) -> List[Path]:
    """Write ``text`` and its provenance sidecar. The output is checked before anything is written; a sidecar left
    without its output (the file was deleted) describes nothing and is replaced."""
    path = Path(path)
    side = sidecar(path)
    check_output(path, overwrite)
    check_output(side, overwrite or not path.exists())
    meta = provenance(config, command=config.get("command"), output=str(path))
    atomic_write_text(path, text, overwrite=overwrite)
    atomic_write_text(side, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n", overwrite=True)
    return [path, side]


#: first characters that make a spreadsheet read a cell as a formula (CSV injection: ``=HYPERLINK(...)``)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with ``'`` (shown as text, the way
    spreadsheets mark literal text); numbers, and text that is a plain number (``-0.5``), are left as they are."""
    if not isinstance(value, str) or not value.startswith(FORMULA_START):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def spreadsheet_csv(df: pd.DataFrame) -> str:
    """``df`` as CSV (no index) for people to open in a spreadsheet: text cells and column names that start with
    ``= + - @`` (or a tab or carriage return) are neutralised by ``spreadsheet_cell``; numeric columns are untouched,
    so negative numbers stay numbers. Not for files lmms-ac reads back (the tidy table, the score store keep every
    name exactly)."""
    from lmms_ac.strict_csv import frame_to_csv

    out = df.copy()
    for c in out.columns:
        if not pd.api.types.is_numeric_dtype(out[c]):
            out[c] = out[c].map(spreadsheet_cell)
    out.columns = [spreadsheet_cell(str(c)) for c in out.columns]
    return frame_to_csv(out)


def write_csv(
    df: pd.DataFrame, path: PathLike, config: Dict[str, Any], overwrite: bool = False, spreadsheet: bool = False
) -> List[Path]:
    """``df`` as CSV (no index) plus the provenance sidecar; ``spreadsheet``: an export for people, with formula-like
    text neutralised (``spreadsheet_csv``), for tables lmms-ac never reads back."""
    from lmms_ac.strict_csv import frame_to_csv

    return write_text_report(spreadsheet_csv(df) if spreadsheet else frame_to_csv(df), path, config, overwrite)


def write_json(doc: Dict[str, Any], path: PathLike, config: Dict[str, Any], overwrite: bool = False) -> Path:
    """``doc`` as JSON with a ``provenance`` entry."""
    path = Path(path)
    check_output(path, overwrite)
    full = dict(doc)
    full["provenance"] = provenance(config, command=config.get("command"))
    return atomic_write_text(path, json.dumps(full, indent=2, default=str) + "\n", overwrite=overwrite)


def json_document(doc: Dict[str, Any], config: Dict[str, Any]) -> str:
    """``doc`` with provenance as a JSON string (for ``--json`` on stdout)."""
    full = dict(doc)
    full["provenance"] = provenance(config, command=config.get("command"))
    return json.dumps(full, indent=2, default=str)
