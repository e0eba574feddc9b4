"""The layer curves against depth: C@L, reconstruction and attention balance, each with its reference
(the encoder's own C and chance; perfect reconstruction; the share a uniform attention would give)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, List, Optional

from lmms_ac.law.plots import FORMATS, PathLike, new_figure, plain_text, save_figure


@plain_text
def plot_layer_curves(
    report, stem: PathLike, title: str = "", formats: Iterable[str] = FORMATS, overwrite: bool = False
) -> List[Path]:
    """One row of panels (only those ``report`` has): C@L, recon@L, attn_img@L against layer."""
    panels = []
    if report.c:
        panels.append(
            (
                "C@L: keypoint matching (PCK %)",
                report.c,
                [(report.c_encoder, "encoder", "C0"), (report.c_chance, "chance", "0.6")],
            )
        )
    if report.recon:
        panels.append(
            ("recon@L: linear map back to the encoder (cosine)", report.recon, [(1.0, "encoder (identity)", "C0")])
        )
    if report.attn_img:
        panels.append(
            (
                "attn_img@L: text -> image attention share",
                report.attn_img,
                [(report.attn_uniform, "uniform attention", "0.6")],
            )
        )
    if not panels:
        raise ValueError("the report holds no per-layer values to plot")
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(4.6 * len(panels), 3.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    fig.subplots_adjust(wspace=0.3)
    for ax, (label, values, refs) in zip(axes, panels):
        xs = sorted(values)
        ax.plot(xs, [values[x] for x in xs], marker="o", color="C3", label="MLLM visual tokens")
        for value, name, colour in refs:
            if not math.isnan(value):
                ax.axhline(value, linestyle="--", color=colour, label=name)
        ax.set_xlabel("layer (0 = projector output)" if 0 in values else "LLM block")
        ax.set_title(label, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, y=1.04)
    return save_figure(fig, stem, formats, overwrite=overwrite)


@plain_text
def plot_knn_curves(
    curves,
    stem: PathLike,
    k: int,
    title: str = "",
    formats: Iterable[str] = FORMATS,
    overwrite: bool = False,
    chance: float = float("nan"),
) -> List[Path]:
    """Mutual k-NN alignment against LLM layer, one line per language model (``{label: {layer: value}}``)."""
    if not curves:
        raise ValueError("no alignment curve to plot")
    fig = new_figure(5.0, 3.4)
    ax = fig.subplots()
    for i, (label, values) in enumerate(curves.items()):
        xs = sorted(values)
        ax.plot(xs, [values[x] for x in xs], marker="o", color=f"C{i}", label=label)
    if not math.isnan(chance):
        ax.axhline(chance, linestyle="--", color="0.6", label="independent spaces (k/(N-1))")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("LLM layer (0 = token embeddings)")
    ax.set_ylabel(f"mutual {k}-NN alignment")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, y=1.04)
    return save_figure(fig, stem, formats, overwrite=overwrite)


def refuse_existing_figure(stem: Optional[Path], overwrite: bool) -> None:
    """Raise ``OutputExistsError`` when a figure at ``stem`` exists and ``overwrite`` is off: checked before
    the (long) computation, not after it."""
    if stem is None or overwrite:
        return
    from lmms_ac.io import OutputExistsError

    for fmt in FORMATS:
        if stem.with_name(f"{stem.name}.{fmt}").exists():
            raise OutputExistsError(f"{stem}.{fmt} already exists; choose another --plot directory or pass --overwrite")
