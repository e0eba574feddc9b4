"""Figures of the law, the policy and patch information loss (matplotlib, no pyplot global state).

Each function builds a ``matplotlib.figure.Figure`` and writes it atomically in every requested
format (PNG and SVG by default) next to ``stem`` (``stem.png``, ``stem.svg``); existing files are
refused unless ``overwrite``. They return the written paths.

Text is drawn as typed: variant and benchmark names are user text, and matplotlib would read
``$...$`` in them as mathtext (``$\\undefinedmacro$`` fails the whole figure). Every plot function runs
under ``plain_text`` and ``save_figure`` turns mathtext off on every text of the figure it writes.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, TypeVar, Union

import numpy as np

from lmms_ac.io import OutputExistsError, atomic_write_bytes

FORMATS = ("png", "svg")
PathLike = Union[str, Path]
#: matplotlib settings under which user text is never parsed as mathtext
PLAIN_TEXT_RC = {"text.parse_math": False}
PlotFunction = TypeVar("PlotFunction", bound=Callable[..., Any])


def plain_text(plot: PlotFunction) -> PlotFunction:
    """Run ``plot`` with mathtext off, so every text it creates (titles, labels, legends) is drawn as typed."""

    @functools.wraps(plot)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context(PLAIN_TEXT_RC):
            return plot(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def no_mathtext(fig) -> None:
    """Turn mathtext off on every text already in ``fig`` (figures built outside ``plain_text``)."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, stem: PathLike, formats: Iterable[str] = FORMATS, overwrite: bool = False) -> List[Path]:
    """Write ``fig`` as ``stem.<fmt>`` for each format; all targets are checked before any is written."""
    stem = Path(stem)
    formats = list(formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unsupported figure format(s) {bad}; choose from {', '.join(FORMATS)}")
    targets = [stem.with_name(f"{stem.name}.{f}") for f in formats]
    if not overwrite:
        for t in targets:
            if t.exists():
                raise OutputExistsError(f"{t} already exists; choose another directory or pass --overwrite")
    import matplotlib

    out = []
    with matplotlib.rc_context(PLAIN_TEXT_RC):  # tick labels are made while saving
        no_mathtext(fig)
        for fmt, target in zip(formats, targets):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, bbox_inches="tight")
            out.append(atomic_write_bytes(target, buf.getvalue(), overwrite=overwrite))
    return out


@plain_text
def plot_law_surface(
    fit, stem: PathLike, formats: Iterable[str] = FORMATS, overwrite: bool = False, grid: int = 60
) -> List[Path]:
    """Contour of the fitted law (``AC_poly2``) over the (A, C) range with the settings as points.

    ``fit`` is a ``lmms_ac.law.fit.BenchmarkFit``. Scored settings are circles coloured by their score;
    unscored (predicted) settings are crosses.
    """
    p = fit.predictions
    a0, a1 = float(p["A"].min()), float(p["A"].max())
    c0, c1 = float(p["C"].min()), float(p["C"].max())
    pad_a, pad_c = 0.05 * (a1 - a0 or 1.0), 0.05 * (c1 - c0 or 1.0)
    ga, gc = np.meshgrid(np.linspace(a0 - pad_a, a1 + pad_a, grid), np.linspace(c0 - pad_c, c1 + pad_c, grid))
    z = fit.law_predict(ga.ravel(), gc.ravel()).reshape(ga.shape)
    fig = new_figure(6.0, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    cs = ax.contourf(ga, gc, z, levels=20, cmap="viridis", alpha=0.85)
    fig.colorbar(cs, ax=ax, label=f"predicted {fit.benchmark}")
    scored = p[p["scored"]]
    ax.scatter(
        scored["A"],
        scored["C"],
        c=scored["score"],
        cmap="viridis",
        vmin=float(z.min()),
        vmax=float(z.max()),
        edgecolors="white",
        s=50,
        zorder=3,
        label="trained",
    )
    for _, row in p.iterrows():
        ax.annotate(
            str(row["setting"]),
            (row["A"], row["C"]),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
            color="white",
        )
    un = p[~p["scored"]]
    if len(un):
        ax.scatter(un["A"], un["C"], marker="x", c="red", s=50, zorder=3, label="predicted")
    m = fit.models["AC_poly2"]
    ax.set_title(f"{fit.benchmark}: degree-2 law, R²={m.r2:.3f} (LOO {m.r2_loo:.3f})")
    ax.set_xlabel("A")
    ax.set_ylabel("C")
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, stem, formats, overwrite)


@plain_text
def plot_pred_vs_actual(
    fits: Sequence, stem: PathLike, formats: Iterable[str] = FORMATS, overwrite: bool = False
) -> List[Path]:
    """Predicted vs actual score per benchmark: in-sample (filled) and leave-one-out (hollow)."""
    fits = list(fits)
    n = len(fits)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig = new_figure(3.2 * cols, 3.0 * rows)
    for i, f in enumerate(fits):
        ax = fig.add_subplot(rows, cols, i + 1)
        p = f.predictions[f.predictions["scored"]]
        lo = float(min(p["score"].min(), p["pred"].min(), p["pred_loo"].min()))
        hi = float(max(p["score"].max(), p["pred"].max(), p["pred_loo"].max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
        ax.scatter(p["score"], p["pred"], s=18, label="in-sample")
        ax.scatter(p["score"], p["pred_loo"], s=18, facecolors="none", edgecolors="C1", label="LOO")
        m = f.models["AC_poly2"]
        ax.set_title(f"{f.benchmark}\nR² {m.r2:.3f}, LOO {m.r2_loo:.3f}", fontsize=8)
        ax.set_xlabel("actual", fontsize=7)
        ax.set_ylabel("predicted", fontsize=7)
        ax.tick_params(labelsize=6)
        if i == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, stem, formats, overwrite)


@plain_text
def plot_recall_curves(
    report,
    stem: PathLike,
    formats: Iterable[str] = FORMATS,
    overwrite: bool = False,
    top: int = 3,
    metrics: Sequence[str] = ("anytime", "final"),
) -> List[Path]:
    """Recall@top against the budget k' for every policy, one panel per benchmark plus the mean.

    Each policy is drawn once per metric: anytime Recall (solid; a hit at some step <= k') and final
    Recall (dashed; a hit after exactly k' trainings, the paper's Algorithm 3).
    """
    df = report.to_frame()
    cols = {m: f"{m}_recall@{top}" for m in metrics}
    if f"recall@{top}" not in df.columns:
        raise ValueError(
            f"the policy report has no recall@{top}; available: "
            f"{', '.join(c for c in df.columns if c.startswith('recall@'))}"
        )
    cols = {m: (c if c in df.columns else f"recall@{top}") for m, c in cols.items()}
    styles = {"anytime": "-", "final": "--"}
    benches = [b for b in dict.fromkeys(df["benchmark"]) if b != "mean"] + ["mean"]
    n = len(benches)
    ncols = min(3, n)
    rows = int(np.ceil(n / ncols))
    fig = new_figure(3.4 * ncols, 2.8 * rows)
    for i, b in enumerate(benches):
        ax = fig.add_subplot(rows, ncols, i + 1)
        sub = df[df["benchmark"] == b]
        for j, (pol, g) in enumerate(sub.groupby("policy", sort=False)):
            for m, col in cols.items():
                ax.plot(
                    g["budget"], g[col], marker="o", ms=3, color=f"C{j}", ls=styles.get(m, ":"), label=f"{pol} ({m})"
                )
        ax.set_ylim(0, 1.02)
        ax.set_title(b, fontsize=8)
        ax.set_xlabel("budget k'", fontsize=7)
        ax.set_ylabel(f"Recall@{top}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=5)
    ranking = getattr(report, "options", {}).get("ranking")
    fig.suptitle(
        f"Recall@{top}: solid = anytime (hit at some step <= k'), dashed = final (after exactly k')"
        + (f"; ranking: {ranking}" if ranking else ""),
        fontsize=7,
    )
    fig.tight_layout()
    return save_figure(fig, stem, formats, overwrite)


@plain_text
def plot_patch_info_loss(
    pil: np.ndarray,
    stem: PathLike,
    formats: Iterable[str] = FORMATS,
    overwrite: bool = False,
    title: Optional[str] = None,
    annotate: bool = True,
) -> List[Path]:
    """Heat map of patch information loss over an M x M grid of visual-token groups.

    ``pil[i, j]`` = (clean - score with only group (i, j)) / clean, row i from the top of the image.
    """
    arr = np.asarray(pil, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"patch information loss must be an M x M array, got shape {arr.shape}")
    m = arr.shape[0]
    fig = new_figure(1.0 + 0.6 * m, 0.6 + 0.6 * m)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(arr, cmap="magma_r", origin="upper")
    fig.colorbar(im, ax=ax, label="PIL")
    if annotate and m <= 16:
        finite = arr[np.isfinite(arr)]
        mid = float(np.mean([finite.min(), finite.max()])) if finite.size else 0.0
        for i in range(m):
            for j in range(m):
                ax.text(
                    j,
                    i,
                    f"{arr[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if arr[i, j] > mid else "black",
                )
    ax.set_xticks(range(m))
    ax.set_yticks(range(m))
    ax.set_title(title or f"patch information loss ({m}x{m})", fontsize=9)
    return save_figure(fig, stem, formats, overwrite)
