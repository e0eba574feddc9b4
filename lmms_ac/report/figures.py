"""Figures for the report as inline SVG markup.

The law, policy and patch-information-loss figures are the project's own (``lmms_ac.law.plots``):
they are drawn into a temporary folder as SVG and read back, so the page shows exactly what
``lmms-ac plot`` writes. The only figure made here is the robustness heat map, which has no
command of its own. SVGs are made safe to inline several times in one page: no XML prologue or
DOCTYPE, no metadata block, text kept as text, and every ``id`` prefixed so figures cannot collide.
Text is drawn as typed, never as mathtext: a variant named ``$\\foo$`` is shown as such.
"""

from __future__ import annotations

import re
import tempfile
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np

from lmms_ac.law.plots import PLAIN_TEXT_RC, no_mathtext

_IDS = count(1)
#: SVG output settings for inline use: real <text> (searchable, small), stable ids across runs, user text as typed
SVG_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "lmms-ac-report",
    "font.family": "DejaVu Sans",
    **PLAIN_TEXT_RC,
}


@contextmanager
def _svg_rc() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(SVG_RC):
        yield


def inline_svg(svg: str, prefix: Optional[str] = None) -> str:
    """Make matplotlib's SVG document embeddable in HTML (see module doc)."""
    prefix = prefix or f"f{next(_IDS)}-"
    svg = re.sub(r"<\?xml[^>]*\?>\s*", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>\s*", "", svg, flags=re.S)
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    ids = set(re.findall(r'\sid="([^"]+)"', svg))
    if ids:
        pattern = "|".join(sorted((re.escape(i) for i in ids), key=len, reverse=True))
        svg = re.sub(rf'(\sid=")({pattern})"', rf'\g<1>{prefix}\g<2>"', svg)
        svg = re.sub(rf"(url\(#)({pattern})\)", rf"\g<1>{prefix}\g<2>)", svg)
        svg = re.sub(rf'(href="#)({pattern})"', rf'\g<1>{prefix}\g<2>"', svg)
    # let CSS size the figure (keep the viewBox), never wider than drawn: fonts keep their size
    width = re.search(r'<svg[^>]*?\swidth="([0-9.]+)(pt|px)?"', svg)
    svg = re.sub(r'(<svg[^>]*?)\swidth="[^"]*"', r"\1", svg, count=1)
    svg = re.sub(r'(<svg[^>]*?)\sheight="[^"]*"', r"\1", svg, count=1)
    if width:
        svg = re.sub(r"<svg\b", f'<svg style="max-width: {width.group(1)}{width.group(2) or "px"}"', svg, count=1)
    return svg.strip()


def via_plot(plot: Callable[..., List[Path]], *args, **kwargs) -> str:
    """Call an ``lmms_ac.law.plots`` function (signature ``(..., stem, formats, overwrite, ...)``)
    with an SVG target in a temporary folder and return the inline markup."""
    with tempfile.TemporaryDirectory(prefix="lmms-ac-report-") as tmp, _svg_rc():
        written = plot(*args, stem=Path(tmp) / "figure", formats=["svg"], overwrite=True, **kwargs)
        return inline_svg(Path(written[0]).read_text(encoding="utf-8"))


def figure_svg(fig) -> str:
    """Inline SVG of a matplotlib ``Figure`` built here."""
    import io

    buf = io.StringIO()
    with _svg_rc():
        no_mathtext(fig)
        fig.savefig(buf, format="svg", bbox_inches="tight")
    return inline_svg(buf.getvalue())


def robustness_heatmap(
    drop: np.ndarray, spread: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, vmax: float
) -> str:
    """Heat map of mean drops (0-100 scale; rows perturbations, columns benchmarks), each cell
    annotated ``mean ± std over seeds`` (std blank for single-seed perturbations)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drop = np.asarray(drop, float)
    h, w = drop.shape
    with _svg_rc():
        fig = Figure(figsize=(max(3.8, 1.8 + 1.05 * w), 1.1 + 0.42 * h), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        vmax = vmax if vmax > 0 else 1.0
        im = ax.imshow(np.ma.masked_invalid(drop), cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        fig.colorbar(im, ax=ax, label="drop (points, 0-100 scale)", fraction=0.05, pad=0.02)
        for i in range(h):
            for j in range(w):
                v, s = drop[i, j], spread[i, j]
                if not np.isfinite(v):
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=6, color="grey")
                    continue
                label = f"{v:.1f}" + (f"\n±{s:.1f}" if np.isfinite(s) else "")
                ax.text(
                    j,
                    i,
                    label,
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="white" if abs(v) > 0.6 * vmax else "black",
                )
        ax.set_xticks(range(w))
        ax.set_xticklabels(cols, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(h))
        ax.set_yticklabels(rows, fontsize=7)
        ax.set_title(title, fontsize=9)
    return figure_svg(fig)
