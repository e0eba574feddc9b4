"""``study report``: what is done so far -> tidy table -> scores -> leaderboard, law fit, recommendation,
robustness table, plots and the HTML page, all under ``<output>/report/``.

Only the results of the study's *current* units are read (the ``done/`` files of the plan), so results
of models removed from the file or of superseded arguments never leak into the reports. Every step
calls the library (``lmms_ac.results``, ``lmms_ac.law``, ``lmms_ac.report``); a step that cannot run
yet (e.g. a law fit with too few variants) is skipped with the reason. The report folder is derived
data: each report replaces the previous one's files.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable, Dict, List

from lmms_ac.io import atomic_write_text, check_writable
from lmms_ac.study import state as S
from lmms_ac.study.progress import Progress, progress
from lmms_ac.study.spec import Study

Printer = Callable[[str], None]


def _scores_rows(out: Path, units) -> List[Dict[str, str]]:
    rows = []
    for u in units:
        doc = S.read_json(S.done_path(out, u.unit_id, "score"))
        if isinstance(doc, dict) and isinstance(doc.get("row"), dict):
            rows.append(doc["row"])
    return rows


def _write_scores(rows: List[Dict[str, str]], path: Path) -> Path:
    from lmms_ac.scores.store import SCORE_COLUMNS

    buf = io.StringIO()
    columns = SCORE_COLUMNS + [c for r in rows for c in r if c not in SCORE_COLUMNS]
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(columns)), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return atomic_write_text(path, buf.getvalue(), overwrite=True)


def _scores_frame(rows: List[Dict[str, str]]):
    """The done score rows as ``lmms_ac.scores.store`` reads a scores file (every value a string)."""
    import pandas as pd

    from lmms_ac.scores.store import SCORE_COLUMNS

    columns = list(dict.fromkeys(SCORE_COLUMNS + [c for r in rows for c in r]))
    return pd.DataFrame([{c: str(r.get(c, "")) for c in columns} for r in rows], columns=columns)


def _ac_of(scores, path: Path, options, notes: List[str]):
    """variant -> A, C of the variants that have both (as the report page reads them); None, with a note, else."""
    from lmms_ac.report.build import read_ac

    ac, problem = read_ac(path, scores, options)
    if problem:
        notes.append(f"A/C: {problem}" if ac is not None else f"no A/C yet ({problem}): no law fit or recommendation")
    return ac


def report_options(study: Study):
    """The report settings of the study file as the report's ``Options``."""
    from lmms_ac.report.sections import Options

    rs = study.report
    return Options(benchmarks=rs.benchmarks, metrics=dict(rs.metrics), normalize=rs.normalize)


def _too_few(an) -> str:
    have = ", ".join(f"{b}: {n}" for b, n in an.law_skipped.items()) or "none"
    return f"the law needs at least 2 variants with a clean score and A/C per benchmark (now {have})"


def build_study_report(study: Study, printer: Printer = print, versions=None) -> Dict[str, Any]:
    """Write every report the study asks for (``report.outputs``); returns {written: [...], notes: [...]}."""
    from lmms_ac.results.output import write_csv, write_json

    out = study.output_dir
    rdir = out / "report"
    check_writable(rdir, directory=True, what="study report folder")
    rdir.mkdir(parents=True, exist_ok=True)
    prep = progress(study, versions)
    rs = study.report
    want = set(rs.outputs)
    cfg = {
        "command": "study report",
        "study": study.name,
        "units_done": len(prep.done),
        "units_total": len(prep.plan.units),
    }
    written: List[Path] = []
    notes: List[str] = []
    problems = work_left(prep)  # failed models and unfinished work: printed and on the page

    def step(name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (ValueError, KeyError, FileNotFoundError) as err:
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            notes.append(f"{name} skipped: {msg}")
            return None

    # 1. results -> tidy table (only this plan's done units)
    eval_files = [S.done_path(out, u.unit_id, "eval") for u in prep.done if u.kind == "eval"]
    table = None
    if eval_files:
        from lmms_ac.results.collect import collect

        table = collect(eval_files).table
        written += write_csv(table, rdir / "table.csv", cfg, overwrite=True)
    else:
        notes.append("no lmms-eval results yet: no table, leaderboard, fit or robustness report")
    # 2. scores, and A/C from them as the report reads a scores file
    rows = _scores_rows(out, [u for u in prep.done if u.kind == "score"])
    options = report_options(study)
    scores = scores_csv = ac = None
    if rows:
        scores_csv = _write_scores(rows, rdir / "scores.csv")
        written.append(scores_csv)
        scores = _scores_frame(rows)
        ac = _ac_of(scores, scores_csv, options, notes)
    if ac is not None:
        written.append(atomic_write_text(rdir / "ac.csv", ac.reset_index().to_csv(index=False), overwrite=True))
    if table is None:
        return _finish(rdir, written, notes, problems, prep, printer)
    # 3. one analysis of the table and the scores: every file below and the page read from it
    from lmms_ac.report.build import analysis_of

    an = analysis_of(table, rdir / "table.csv", scores, scores_csv, options)
    metrics = dict(rs.metrics)
    if "leaderboard" in want:
        from lmms_ac.report.leaderboard import to_markdown

        board = step("leaderboard", an.board)
        if board is not None:
            written += write_csv(board, rdir / "leaderboard.csv", cfg, overwrite=True, spreadsheet=True)
            written.append(atomic_write_text(rdir / "leaderboard.md", to_markdown(board), overwrite=True))
    # 4. robustness
    if "robustness" in want:
        from lmms_ac.results.robustness_table import average_drop

        detail, why = an.robustness()
        if detail is None:
            notes.append(f"no probe results yet: no robustness table ({why})")
        else:
            written += write_csv(detail, rdir / "robustness.csv", cfg, overwrite=True, spreadsheet=True)
            avg = step("robustness summary", lambda: average_drop(detail, metrics))
            if avg is not None:
                written += write_csv(avg, rdir / "robustness_summary.csv", cfg, overwrite=True, spreadsheet=True)
            if "plots" in want:
                written += (
                    step(
                        "robustness plot",
                        lambda: plot_drops(detail, metrics, rdir / "figures" / "robustness_drops", rs.formats),
                    )
                    or []
                )
    # 5. law fit (+ plots)
    fit = an.law if ac is not None and "fit" in want else None
    if ac is not None and "fit" in want and fit is None:
        notes.append(f"law fit skipped: {an.law_error or an.clean_error or _too_few(an)}")
    if fit is not None:
        written.append(write_json(fit.to_dict(), rdir / "fit.json", cfg, overwrite=True))
        written += write_csv(fit.coef_frame(), rdir / "fit_coefficients.csv", cfg, overwrite=True, spreadsheet=True)
        written += write_csv(
            fit.prediction_frame(), rdir / "fit_predictions.csv", cfg, overwrite=True, spreadsheet=True
        )
    if fit is not None and "plots" in want:
        from lmms_ac.law.plots import plot_law_surface, plot_pred_vs_actual

        def _plots():
            figs = []
            for b, bf in fit.benchmarks.items():
                figs += plot_law_surface(bf, rdir / "figures" / f"law_surface_{b}", rs.formats, True)
            figs += plot_pred_vs_actual(
                list(fit.benchmarks.values()), rdir / "figures" / "law_pred_vs_actual", rs.formats, True
            )
            return figs

        written += step("plots", _plots) or []
    # 6. which representation to train next
    if ac is not None and "recommend" in want:
        written += step("recommend", lambda: _recommend(study, an, rdir)) or []
    # 7. the HTML page
    if "html" in want:
        from lmms_ac.report.build import write_page

        page = step("html", lambda: write_page(an, rdir / "report.html", overwrite=True, config=cfg, warnings=problems))
        if page is not None:
            written.append(Path(page))
    return _finish(rdir, written, notes, problems, prep, printer)


def _finish(
    rdir: Path, written: List[Path], notes: List[str], problems: List[str], prep: Progress, printer: Printer
) -> Dict[str, Any]:
    summary = {
        "written": [str(p) for p in written],
        "notes": notes,
        "problems": problems,
        "units_done": len(prep.done),
        "units_total": len(prep.plan.units),
    }
    atomic_write_text(rdir / "report.json", json.dumps(summary, indent=1) + "\n", overwrite=True)
    for n in problems:
        printer(f"warning: {n}")
    for n in notes:
        printer(f"note: {n}")
    printer(f"report of {len(prep.done)}/{len(prep.plan.units)} done unit(s): {len(written)} file(s) in {rdir}")
    return summary


def work_left(prog: Progress) -> List[str]:
    """What the report cannot show and why: each model whose jobs failed (attempts used up), with the last log
    line and the fix, and the count of units still running, queued, interrupted or pending."""
    lines = []
    for entry, units, job, log in prog.failed():
        cols = ", ".join(dict.fromkeys(u.column for u in units))
        lines.append(
            f"{entry}: {cols} failed after {job.failures} attempt(s), so it is missing from this report: "
            f"{job.last_line} (log: {log}); fix it, then `lmms-ac study run FILE --retry-failed`"
        )
    left: Dict[str, int] = {}
    for u in prog.pending:
        st = prog.units[u.unit_id].state
        if st != "failed":
            left[st] = left.get(st, 0) + 1
    if left:
        what = ", ".join(f"{n} {k}" for k, n in sorted(left.items()))
        lines.append(f"{sum(left.values())} of {len(prog.plan.units)} result(s) not done yet ({what}): "
                     "this report covers what is done; `lmms-ac study status FILE` follows the rest")  # fmt: skip
    return lines


def _recommend(study: Study, an, rdir: Path) -> List[Path]:
    """Next candidate to train for the study's recommend benchmark, by the default policy of ``recommend``."""
    from lmms_ac.law.policies import DEFAULT_POLICY
    from lmms_ac.law.recommend import recommend

    bench = study.report.recommend_benchmark or (study.benchmarks[0] if study.benchmarks else None)
    if bench is None:
        raise ValueError("no benchmark to optimise: set report.recommend_benchmark")
    if an.clean is None or bench not in an.clean.columns:
        raise ValueError(f"no clean {bench} scores yet to recommend from")
    ac = an.ac
    scores = an.clean[bench].dropna()
    trained = {str(v): float(s) for v, s in scores.items() if str(v) in ac.index}
    rec = recommend(list(ac.index), ac["A"].to_numpy(), ac["C"].to_numpy(), trained, policy=DEFAULT_POLICY, seed=0)
    text = [f"benchmark {bench}: next to train ({DEFAULT_POLICY} policy): {rec.next or '(nothing left)'}"]
    text += [f"  why: {rec.why}"] if rec.why else []
    text += [f"  note: {n}" for n in rec.notes]
    text += ["", rec.ranking.to_string(index=False, float_format=lambda v: f"{v:.4f}")]
    return [
        atomic_write_text(
            rdir / "recommend.json",
            json.dumps({"benchmark": bench, **rec.to_dict()}, indent=1, default=str) + "\n",
            overwrite=True,
        ),
        atomic_write_text(rdir / "recommend.txt", "\n".join(text) + "\n", overwrite=True),
    ]


def plot_drops(detail, metrics: Dict[str, str], stem: Path, formats: List[str]) -> List[Path]:
    """Grouped bars: mean drop (0-100 scale, primary metric, averaged over benchmarks and seeds) per
    perturbation, one bar per variant, with the spread over benchmarks as error bars."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lmms_ac.law.plots import save_figure
    from lmms_ac.results.robustness_table import primary_rows

    rows = primary_rows(detail, metrics)
    g = rows.groupby(["perturbation", "variant"])["drop_pct_mean"]
    mean, spread = g.mean().unstack("variant"), g.std(ddof=0).unstack("variant")
    perts, variants = list(mean.index), list(mean.columns)
    fig = Figure(figsize=(max(4.0, 1.0 + 0.9 * len(perts) * max(1, len(variants)) ** 0.5), 3.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(variants))
    x = np.arange(len(perts))
    for i, v in enumerate(variants):
        ax.bar(
            x + (i - (len(variants) - 1) / 2) * width,
            mean[v].to_numpy(float),
            width,
            yerr=spread[v].fillna(0).to_numpy(float),
            capsize=2,
            label=str(v),
        )
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(perts, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("drop vs clean (points, 0-100)")
    ax.set_title("robustness: mean drop over benchmarks", fontsize=9)
    if len(variants) > 1:
        ax.legend(fontsize=7)
    return save_figure(fig, stem, formats, overwrite=True)
