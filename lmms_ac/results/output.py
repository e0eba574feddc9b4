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


def _check(paths: List[Path], overwrite: bool) -> None:
    if overwrite:
        return
    for p in paths:
        if p.exists():
            raise OutputExistsError(f"{p} already exists; choose another path or pass --overwrite to replace it")


def write_text_report(text: str, path: PathLike, config: Dict[str, Any], overwrite: bool = False) -> List[Path]:
    """Write ``text`` and its provenance sidecar (both checked before either is written)."""
    path = Path(path)
    side = sidecar(path)
    _check([path, side], overwrite)
    meta = provenance(config, command=config.get("command"), output=str(path))
    atomic_write_text(path, text, overwrite=overwrite)
    atomic_write_text(side, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n", overwrite=overwrite)
    return [path, side]


def write_csv(df: pd.DataFrame, path: PathLike, config: Dict[str, Any], overwrite: bool = False) -> List[Path]:
    """``df`` as CSV (no index) plus the provenance sidecar."""
    from lmms_ac.strict_csv import frame_to_csv

    return write_text_report(frame_to_csv(df), path, config, overwrite)


def write_json(doc: Dict[str, Any], path: PathLike, config: Dict[str, Any], overwrite: bool = False) -> Path:
    """``doc`` as JSON with a ``provenance`` entry."""
    path = Path(path)
    _check([path], overwrite)
    full = dict(doc)
    full["provenance"] = provenance(config, command=config.get("command"))
    return atomic_write_text(path, json.dumps(full, indent=2, default=str) + "\n", overwrite=overwrite)


def json_document(doc: Dict[str, Any], config: Dict[str, Any]) -> str:
    """``doc`` with provenance as a JSON string (for ``--json`` on stdout)."""
    full = dict(doc)
    full["provenance"] = provenance(config, command=config.get("command"))
    return json.dumps(full, indent=2, default=str)
