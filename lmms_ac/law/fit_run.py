"""The runs behind ``lmms-ac fit`` and ``lmms-ac plot law``: fit the law on the input, write the coefficient and
prediction exports and the figures, and the text table of every model's R²."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from lmms_ac.law.fit import LAW_MODEL, MODEL_NAMES, LawReport, fit_law
from lmms_ac.law.inputs import InputSettings, load_inputs

Note = Callable[[str], None]


def no_note(msg: str) -> None:
    """The default of a run's ``note``: say nothing."""


@dataclass(frozen=True)
class FitSettings:
    """The options of ``lmms-ac fit``."""

    inputs: InputSettings
    normalize: Optional[str] = None  # default: minmax for an example, else none
    interval: str = "ols"
    level: float = 0.9
    random_draws: int = 100
    seed: int = 0
    coef_out: Optional[str] = None
    pred_out: Optional[str] = None
    plot: Optional[str] = None  # figure folder
    formats: Sequence[str] = ()
    overwrite: bool = False
    config: Mapping[str, Any] = field(default_factory=dict)  # provenance of the outputs


@dataclass
class ReportRun:
    """What a law command ran: its ``report`` (anything with ``to_dict``), the provenance of ``--json``, the
    files and figures written."""

    report: Any
    config: Dict[str, Any]
    written: List[Path] = field(default_factory=list)
    figures: List[Path] = field(default_factory=list)

    def to_json(self) -> str:
        from lmms_ac.results.output import json_document

        return json_document(self.report.to_dict(), self.config)


@dataclass
class FitRun(ReportRun):
    """The fit, the files written and the provenance of ``--json``."""

    report: LawReport

    def text(self) -> str:
        return fit_text(self.report)


def default_normalize(inputs: InputSettings, normalize: Optional[str]) -> str:
    """``--normalize`` or its default: minmax for a bundled example, none otherwise."""
    return normalize or ("minmax" if inputs.example else "none")


def run_fit(s: FitSettings, note: Note = no_note) -> FitRun:
    """Fit, then write the CSV exports and figures asked for."""
    from lmms_ac.results.output import write_csv

    data = load_inputs(s.inputs)
    report = fit_law(
        data,
        normalize=default_normalize(s.inputs, s.normalize),
        random_draws=s.random_draws,
        seed=s.seed,
        interval=s.interval,
        level=s.level,
    )
    run = FitRun(report, dict(s.config))
    if s.coef_out:
        run.written += write_csv(report.coef_frame(), s.coef_out, run.config, overwrite=s.overwrite, spreadsheet=True)
    if s.pred_out:
        run.written += write_csv(
            report.prediction_frame(), s.pred_out, run.config, overwrite=s.overwrite, spreadsheet=True
        )
    if s.plot:
        run.figures = plot_law(report, Path(s.plot), list(s.formats), s.overwrite, note)
    return run


def plot_law(report: LawReport, out_dir: Path, formats: List[str], overwrite: bool, note: Note = no_note) -> List[Path]:
    """A law surface per benchmark and the predicted-vs-actual figure in ``out_dir``."""
    from lmms_ac.law.plots import plot_law_surface, plot_pred_vs_actual

    written = []
    for b, bf in report.benchmarks.items():
        written += plot_law_surface(bf, out_dir / f"law_surface_{b}", formats, overwrite)
    written += plot_pred_vs_actual(list(report.benchmarks.values()), out_dir / "law_pred_vs_actual", formats, overwrite)
    note(f"wrote {len(written)} figure file(s) to {out_dir}")
    return written


@dataclass(frozen=True)
class PlotLawSettings:
    """The options of ``lmms-ac plot law``."""

    inputs: InputSettings
    out_dir: str
    normalize: Optional[str] = None
    formats: Sequence[str] = ()
    overwrite: bool = False


def run_plot_law(s: PlotLawSettings, note: Note = no_note) -> List[Path]:
    """Fit with the default options and write the law figures; the files written."""
    report = fit_law(load_inputs(s.inputs), normalize=default_normalize(s.inputs, s.normalize))
    return plot_law(report, Path(s.out_dir), list(s.formats), s.overwrite, note)


def fmt(v: Optional[float], digits: int = 4) -> str:
    """A table cell: the value with ``digits`` decimals, or ``nan``."""
    return "   nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def fit_text(report: LawReport) -> str:
    """In-sample and LOO R² per model and benchmark, interval coverage, and the predictions of unscored settings."""
    names = MODEL_NAMES
    head = (
        f"{'benchmark':<16}{'n':>4} "
        + " ".join(f"{n:>13}" for n in names)
        + f" {'LOO ' + LAW_MODEL:>13} {'rho ' + LAW_MODEL:>13} {'rhoLOO':>7}"
    )
    lines = [
        f"In-sample R² per model (normalize={report.options['normalize']}; random = mean over "
        f"{report.options['random_draws']} draws); law = {LAW_MODEL}",
        head,
    ]
    for b, bf in report.benchmarks.items():
        law = bf.models[LAW_MODEL]
        lines.append(
            f"{b:<16}{bf.n:>4} "
            + " ".join(f"{fmt(bf.models[n].r2):>13}" for n in names)
            + f" {fmt(law.r2_loo):>13} {fmt(law.spearman):>13} {fmt(law.spearman_loo, 3):>7}"
        )
    for g, models in report.groups.items():
        law = models[LAW_MODEL]
        label = f"mean:{g}" + ("" if law["complete"] else "*")
        lines.append(
            f"{label:<16}{law['n_benchmarks']:>4} "
            + " ".join(f"{fmt(models[n]['r2']):>13}" for n in names)
            + f" {fmt(law['r2_loo']):>13} {fmt(law['spearman']):>13} {fmt(law['spearman_loo'], 3):>7}"
        )
    if any(not m[LAW_MODEL]["complete"] for m in report.groups.values()):
        lines.append("* group mean over the benchmarks present only")
    cov = report.coverage_frame()
    cov = cov[cov["benchmark"] == "all"]
    if len(cov):
        level = report.options["level"]
        parts = [f"{r.method} {r.coverage:.3f} ({r.covered}/{r.held_out})" for r in cov.itertuples(index=False)]
        lines.append("")
        lines.append(
            f"Coverage of the law's {100 * level:g}% prediction intervals, leave-one-setting-out over every "
            f"benchmark (a calibrated interval covers about {level:g}): "
            + ", ".join(parts)
            + f"; used here: {report.options['interval']}"
        )
    preds = report.prediction_frame()
    preds = preds[~preds["scored"]] if len(preds) else preds
    if len(preds):
        lines.append("")
        lines.append(
            "Predicted scores of settings without a score (law " + LAW_MODEL + ", interval "
            f"{report.options['interval']} at level {report.options['level']}):"
        )
        for r in preds.itertuples(index=False):
            lines.append(f"  {r.benchmark:<16} {r.setting:<24} {r.pred:10.4f}  [{r.lo:.4f}, {r.hi:.4f}] ({r.interval})")
    return "\n".join(lines) + "\n"
