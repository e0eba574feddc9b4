"""The run behind ``lmms-ac plot pil``: the heat map of patch information loss (or importance), from the tidy
table's probe runs (``report.probe_maps``) or from an M x M array file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class PilSettings:
    """The options of ``lmms-ac plot pil``: exactly one of ``array`` and ``table`` (with benchmark, m, metric)."""

    out: str  # output stem (extensions added per format)
    array: Optional[str] = None  # .npy or comma-separated text
    table: Optional[str] = None  # tidy table holding the clean and per-group probe runs
    benchmark: Optional[str] = None
    m: Optional[int] = None  # groups per side of the token grid
    metric: Optional[str] = None
    variant: Optional[str] = None
    kind: str = "pil"  # pil or importance
    title: Optional[str] = None
    formats: Sequence[str] = ()
    overwrite: bool = False


def read_pil_array(path_text: str) -> np.ndarray:
    """An M x M array from an .npy or comma-separated text file."""
    path = Path(path_text)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"array file {path} {what}; give an .npy or comma-separated text file")
    try:
        return np.load(path) if path.suffix == ".npy" else np.loadtxt(path, delimiter=",", ndmin=2)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise ValueError(f"array file {path} is not a numeric .npy or CSV array ({err})") from None


def run_plot_pil(s: PilSettings, show: Optional[Callable[[str], None]] = None) -> List[Path]:
    """Read or compute the map (``show`` gets the text of one computed from the table) and write its figure; the
    files written."""
    from lmms_ac.law.plots import plot_patch_info_loss

    if bool(s.array) == bool(s.table):
        raise ValueError("plot pil takes either an ARRAY file or --table (with --benchmark, --m and --metric)")
    if s.table:
        from lmms_ac.report.probe_maps import probe_map
        from lmms_ac.results.table import read_table

        if not (s.benchmark and s.m and s.metric):
            raise ValueError(
                "--table needs --benchmark (e.g. mme), --m (groups per side) and --metric (e.g. mme_perception_score)"
            )
        arr = probe_map(read_table(s.table), s.benchmark, s.m, s.metric, s.variant, s.kind)
        if show is not None:
            show(np.array2string(arr, precision=3))
    else:
        arr = read_pil_array(str(s.array))
    return plot_patch_info_loss(arr, s.out, list(s.formats), s.overwrite, title=s.title)
