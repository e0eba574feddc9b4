"""The report's sections as plain data, each computed by the project's own functions.

Leaderboard: ``report.leaderboard``; law: ``law.data.from_table`` + ``law.fit.fit_law``; policy:
``law.policy.simulate`` / ``recommend``; robustness: ``results.robustness_table``; probe maps:
``report.probe_maps.probe_map``; figures: ``law.plots``. A section that cannot be computed from
the inputs is still returned, with ``empty`` saying which run would fill it.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

import lmms_ac.report.figures as figures
from lmms_ac.report.tables import Cell, Column, HtmlTable, frame_table, num_cell, shaded

#: perturbation families shown as maps over the token grid, not as robustness drops
MAP_PROBES = {"tokgroup": "pil", "toknoise": "importance"}
#: figures per section before the rest is folded away
LAW_SURFACES_OPEN = 8


@dataclass
class Options:
    """What shapes the report besides its inputs (recorded in its provenance)."""

    benchmarks: Optional[List[str]] = None
    metrics: Dict[str, str] = field(default_factory=dict)
    normalize: str = "minmax"
    interval: str = "ols"
    level: float = 0.9
    policy_runs: int = 1000
    #: synthetic worlds per shape and runs per world of the page's `policy evaluate` table (the CLI uses 200 / 20)
    policy_worlds: int = 20
    policy_eval_runs: int = 10
    seed: int = 0
    a_col: str = "A"
    c_col: str = "C"
    variant_col: str = "variant"
    title: str = "lmms-ac study report"
    #: a bundled law example (``law.examples.EXAMPLES``, e.g. ``law-v1``) shown in the law and policy sections
    #: while the results cannot fill them yet (fewer than 2 trained variants with A/C), labelled as such
    example: Optional[str] = None


@dataclass
class Section:
    id: str
    title: str
    empty: str = ""  # non-empty: why there is nothing to show and which run fills the section
    notes: List[str] = field(default_factory=list)
    data: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Inputs:
    table: pd.DataFrame
    table_path: Path
    scores_path: Optional[Path]
    ac: Optional[pd.DataFrame]  # index variant, columns A, C
    ac_problem: str = ""  # why A/C could not be used although a scores file was given
    scores: Optional[pd.DataFrame] = None  # the scores file as lmms_ac.scores.store read it (None: none or unreadable)


def _groups_of(task: str) -> List[str]:
    from lmms_ac.benchmarks import law_groups, sources

    out = []
    for g, members in law_groups().items():
        for b in members:
            if task == b or any(task == t for t, _ in sources(b)):
                out.append(g)
                break
    return out


def _map_kind(perturbation: str) -> Optional[str]:
    """'pil' / 'importance' for the probes drawn as token-grid maps, else None."""
    head = perturbation.split("_", 1)[0]
    return MAP_PROBES.get(head)


def merge_benchmark_notes(notes: Sequence[str], benchmarks: Sequence[str]) -> List[str]:
    """``"mme: X"`` and ``"seed: X"`` -> ``"mme, seed: X"`` (one line per message, benchmarks in order)."""
    merged: Dict[str, List[str]] = {}
    for n in notes:
        head, sep, tail = n.partition(": ")
        if sep and head in benchmarks:
            merged.setdefault(tail, []).append(head)
        else:
            merged.setdefault(n, [])
    return [f"{', '.join(bs)}: {msg}" if bs else msg for msg, bs in merged.items()]


def _csv_uri(df: pd.DataFrame) -> str:
    from lmms_ac.results.output import spreadsheet_csv  # a download for spreadsheets: no formula runs from a name

    return "data:text/csv;charset=utf-8;base64," + base64.b64encode(spreadsheet_csv(df).encode()).decode()


class Analysis:
    """Computes every quantity once; the page's sections and a study's report files read from it
    (``lmms-ac report`` and ``study report`` build one per report)."""

    def __init__(self, inputs: Inputs, options: Options, law_data: Optional[Dict[str, Any]] = None):
        """``law_data`` (``{benchmark: BenchmarkData}``) replaces what the table and A/C give the law: a
        bundled example's per-benchmark A/C and scores (see ``example_analysis``)."""
        self.inputs, self.options = inputs, options
        self.table = inputs.table
        self.ac = inputs.ac
        self.example: Optional[str] = None  # the bundled example this analysis shows, if it is one
        self.missing: List[str] = []
        if inputs.ac_problem:
            self.missing.append(inputs.ac_problem)
        self._clean: Optional[pd.DataFrame] = None
        self.clean_error = ""
        if law_data is not None:
            self._clean = pd.DataFrame({b: pd.Series(d.score, index=list(d.settings)) for b, d in law_data.items()})
        else:
            try:
                from lmms_ac.results.table import clean_scores

                self._clean = clean_scores(self.table, options.benchmarks, options.metrics)
            except ValueError as err:
                self.clean_error = str(err)
        self.law = None
        self.law_error = ""  # why the law could not be fitted although there are data (e.g. a bad value)
        self.law_data: Dict[str, Any] = {}
        self.law_skipped: Dict[str, int] = {}
        try:
            self._fit_law(law_data)
        except ValueError as err:
            self.law_error = str(err)
        self._robustness: Optional[Tuple[Optional[pd.DataFrame], str]] = None
        self._board: Optional[pd.DataFrame] = None

    # ---------------------------------------------------------------- shared pieces
    def board(self, benchmarks: Optional[Sequence[str]] = None) -> pd.DataFrame:
        """The leaderboard over every benchmark (cached) or over ``benchmarks``, from this analysis' clean
        scores, law predictions and robustness table (nothing computed again)."""
        from lmms_ac.report.leaderboard import leaderboard

        if benchmarks is None and self._board is not None:
            return self._board
        benches = list(self.benchmarks if benchmarks is None else benchmarks)
        clean = None if self._clean is None else self._clean[benches]
        board = leaderboard(
            self.table,
            self.ac,
            benches,
            self.options.metrics,
            clean=clean,
            predictions=self.law_predictions(),
            robustness=self.robustness()[0],
        )
        if benchmarks is None:
            self._board = board
        return board

    def law_predictions(self) -> Dict[str, pd.Series]:
        """Per fitted benchmark, the law's prediction per variant, where it is the leaderboard's definition
        (min-max normalised fit); empty otherwise (the leaderboard then fits its own)."""
        if self.law is None or self.options.normalize != "minmax":
            return {}
        return {b: bf.predictions.set_index("setting")["pred"] for b, bf in self.law.benchmarks.items()}

    @property
    def clean(self) -> Optional[pd.DataFrame]:
        """Clean scores, variant x benchmark (None when the table has none: see ``clean_error``)."""
        return self._clean

    def robustness(self) -> Tuple[Optional[pd.DataFrame], str]:
        """(``robustness_table`` of the table, "") or (None, why there is none) (cached)."""
        if self._robustness is None:
            from lmms_ac.results.robustness_table import robustness_table

            try:
                self._robustness = (robustness_table(self.table), "")
            except ValueError as err:
                self._robustness = (None, str(err))
        return self._robustness

    @property
    def benchmarks(self) -> List[str]:
        return [] if self._clean is None else [str(c) for c in self._clean.columns]

    @property
    def trained(self) -> List[str]:
        return [] if self._clean is None else [str(v) for v in self._clean.index]

    def _fit_law(self, data: Optional[Dict[str, Any]] = None) -> None:
        if data is None and (self.ac is None or self._clean is None):
            return
        from lmms_ac.law.data import from_table
        from lmms_ac.law.fit import fit_law

        if data is None:
            data = from_table(self._clean, self.ac, self.benchmarks, source=str(self.inputs.table_path))
        self.law_data = {b: d for b, d in data.items() if d.n_scored >= 2}
        self.law_skipped = {b: d.n_scored for b, d in data.items() if d.n_scored < 2}
        if self.law_data:
            o = self.options
            self.law = fit_law(self.law_data, normalize=o.normalize, interval=o.interval, level=o.level, seed=o.seed)

    def interval(self, bench: str, variant: str) -> Tuple[float, float]:
        """(lo, hi) of the law's prediction interval for a variant on a benchmark (NaN if none)."""
        if self.law is None or bench not in self.law.benchmarks:
            return float("nan"), float("nan")
        p = self.law.benchmarks[bench].predictions
        row = p[p["setting"] == variant]
        if row.empty:
            return float("nan"), float("nan")
        return float(row["lo"].iloc[0]), float(row["hi"].iloc[0])


def example_analysis(name: str, options: Options) -> Analysis:
    """An ``Analysis`` of a bundled law example (``lmms_ac.law.examples.EXAMPLES``) for the law and policy sections:
    its settings are the trained variants, its per-benchmark A (e.g. ``A_embed_<benchmark>``) and C the law's
    inputs, as ``lmms-ac fit --example`` reads them."""
    from lmms_ac.law.data import example_path, load_example
    from lmms_ac.results.table import empty_table

    data = load_example(name)
    first = next(iter(data.values()))
    ac = pd.DataFrame(
        {"A": np.mean([d.A for d in data.values()], axis=0), "C": first.C},
        index=pd.Index(first.settings, name="variant"),
    )
    an = Analysis(Inputs(empty_table(), example_path(name), example_path(name), ac), options, law_data=data)
    an.example = name
    return an


# ---------------------------------------------------------------------------------------- sections
def _no_ac_reason(an: Analysis) -> str:
    if an.inputs.scores_path is None:
        return (
            "no A/C scores were given: score every representation with `lmms-ac score-a ... --out scores.csv` "
            "and `lmms-ac score-c ... --out scores.csv`, then pass `--scores scores.csv`"
        )
    return f"the A/C scores could not be used: {an.inputs.ac_problem}"


def leaderboard_section(an: Analysis) -> Section:
    sec = Section("leaderboard", "Leaderboard")
    if an._clean is None:
        sec.empty = an.clean_error
        if "no clean" in an.clean_error:
            sec.empty += (
                ". Run the clean benchmarks with lmms-eval (e.g. `lmms-eval --model lmms_ac_llava --tasks "
                "mme,seed ...`), then `lmms-ac collect LOGS --out table.csv` and rebuild the report."
            )
        return sec
    groups: Dict[str, List[str]] = {}
    for b in an.benchmarks:
        for g in _groups_of(b) or ["other"]:
            groups.setdefault(g, []).append(b)
    views = [("all", "all benchmarks", an.benchmarks)]
    if len(groups) > 1 or "other" not in groups:
        views += [(g, f"{g} benchmarks", bs) for g, bs in groups.items()]
    out = []
    for key, label, benches in views:
        board = an.board() if key == "all" else an.board(benches)
        out.append(
            {
                "key": key,
                "label": label,
                "benchmarks": benches,
                "table": _board_table(an, board, benches, key),
                "csv": _csv_uri(board),
                "csv_name": f"leaderboard{'' if key == 'all' else '_' + key}.csv",
            }
        )
    sec.data["views"] = out
    if an.ac is None:
        sec.notes.append("A, C and the law's predictions are empty: " + _no_ac_reason(an))
    untrained = [v for v in (list(an.ac.index) if an.ac is not None else []) if v not in an.trained]
    if untrained:
        sec.notes.append(
            f"{len(untrained)} candidate(s) have A/C scores but no results yet; their row shows the "
            f"law's prediction only: {', '.join(map(str, untrained))}"
        )
    hidden = sorted({p for p in an.table["perturbation"].unique() if _map_kind(str(p))})
    if hidden:
        sec.notes.append(
            f"token-group probes ({len(hidden)} perturbations: {hidden[0]} ...) are drawn as maps in "
            f"'Where the model looks', not as leaderboard columns (the CSV keeps them)"
        )
    return sec


def _board_table(an: Analysis, board: pd.DataFrame, benches: Sequence[str], key: str) -> HtmlTable:
    level = int(round(100 * an.options.level))
    drops = [c for c in board.columns if c.startswith("drop_") and not _map_kind(c[len("drop_") :])]
    cols = [
        Column("rank", "num", "1 = highest average"),
        Column("variant", "text"),
        Column("average", "num", "mean over the variant's benchmarks on a 0-100 scale"),
        Column("n", "num", "benchmarks in the average"),
    ]
    for b in benches:
        cols.append(Column(b, "num", f"clean score on {b}"))
        cols.append(
            Column(
                f"{b} law",
                "num",
                f"the law's prediction from (A, C) with its {level}% prediction interval where defined",
                "law",
            )
        )
    cols += [Column("A", "num", "cross-modal alignment"), Column("C", "num", "correspondence")]
    cols += [
        Column(
            f"drop {d[len('drop_') :]}",
            "num",
            "clean - perturbed on the 0-100 scale, mean over seeds, severities and benchmarks",
            "drop",
        )
        for d in drops
    ]
    rows, keys = [], []
    for rec in board.to_dict("records"):
        v = str(rec["variant"])
        trained = not pd.isna(rec["average"])
        row = [
            num_cell(rec["rank"]),
            Cell(
                v,
                "",
                "variant" + ("" if trained else " candidate"),
                "" if trained else "not trained yet: A/C only, scores are the law's prediction",
            ),
            num_cell(rec["average"], 2),
            num_cell(rec["n_benchmarks"]),
        ]
        for b in benches:
            row.append(num_cell(rec[b]))
            pred = rec.get(f"pred_{b}")
            lo, hi = an.interval(b, v)
            if not pd.isna(pred) and math.isfinite(lo) and math.isfinite(hi):
                c = num_cell(pred, cls="law", title=f"{level}% prediction interval [{lo:.4g}, {hi:.4g}]")
                c.text += f" ±{(hi - lo) / 2:.3g}"
                row.append(c)
            else:
                row.append(num_cell(pred, cls="law"))
        row += [num_cell(rec["A"]), num_cell(rec["C"])]
        row += [num_cell(rec[d], 2, "drop") for d in drops]
        rows.append(row)
        keys.append(v)
    return HtmlTable(cols, rows, id=f"leaderboard-{key}", row_keys=keys)


def _missing_clean_or_ac(an: Analysis, purpose: str, why_ac: str) -> str:
    """Why a section built on clean scores and A/C has nothing to show ("" when both are there)."""
    if an._clean is None:
        return f"no clean benchmark scores {purpose}: {an.clean_error}"
    if an.ac is None:
        return f"{_no_ac_reason(an)}; {why_ac}."
    return ""


def law_section(an: Analysis) -> Section:
    from lmms_ac.law.fit import LAW_MODEL, MODEL_NAMES
    from lmms_ac.law.plots import plot_law_surface, plot_pred_vs_actual

    sec = Section("law", "The law: benchmark score from (A, C)")
    sec.empty = _missing_clean_or_ac(an, "to fit", "the law is fitted once at least 2 trained variants have A/C scores")
    if sec.empty:
        return sec
    if an.law_error:
        sec.empty = f"the law could not be fitted: {an.law_error}"
        return sec
    if an.law is None:
        have = ", ".join(f"{b}: {n}" for b, n in an.law_skipped.items()) or "none"
        sec.empty = (
            "the law needs, per benchmark, at least 2 variants with both a clean score and A/C scores "
            f"(variants with both now: {have}). Train and evaluate more representations with lmms-eval, "
            "score their A and C (lmms-ac score-a / score-c), collect again and rebuild the report."
        )
        return sec
    rep = an.law
    for b, n in an.law_skipped.items():
        sec.notes.append(f"{b}: only {n} variant(s) with a score and A/C; not fitted")
    sec.notes += merge_benchmark_notes([w for bf in rep.benchmarks.values() for w in bf.warnings], list(rep.benchmarks))
    r2 = rep.r2_frame()
    metric_views = [
        ("r2", "in-sample R²"),
        ("r2_loo", "leave-one-out R²"),
        ("spearman", "Spearman ρ (in-sample)"),
        ("spearman_loo", "Spearman ρ (leave-one-out)"),
    ]
    views = []
    for key, label in metric_views:
        wide = r2.pivot_table(index="benchmark", columns="model", values=key, sort=False, dropna=False)
        wide = wide.reindex(columns=MODEL_NAMES)
        wide = wide.reindex([b for b in dict.fromkeys(r2["benchmark"])])
        n = r2.drop_duplicates("benchmark").set_index("benchmark")["n"]
        df = wide.reset_index()
        df.insert(1, "n", n.reindex(df["benchmark"]).to_numpy())
        t = frame_table(
            df,
            labels={m: m.replace("_", " ") for m in MODEL_NAMES},
            digits={m: 3 for m in MODEL_NAMES},
            id=f"law-{key}",
        )
        law_j = list(df.columns).index(LAW_MODEL)
        t.columns[law_j].cls = "law"
        t.columns[1].title = "scored settings (group rows: benchmarks averaged)"
        for row in t.rows:
            row[law_j].cls = (row[law_j].cls + " law").strip()
        shaded(t, range(2, len(df.columns)), 0.0, 1.0)
        views.append({"key": key, "label": label, "table": t})
    sec.data["r2_views"] = views
    sec.data["law_model"] = LAW_MODEL
    sec.data["options"] = rep.options
    sec.data["surfaces"] = [
        {"benchmark": b, "svg": figures.via_plot(plot_law_surface, bf)} for b, bf in rep.benchmarks.items()
    ]
    sec.data["surfaces_open"] = LAW_SURFACES_OPEN
    sec.data["pred_vs_actual"] = figures.via_plot(plot_pred_vs_actual, list(rep.benchmarks.values()))
    preds = rep.prediction_frame()
    un = preds[~preds["scored"]][["benchmark", "setting", "A", "C", "pred", "lo", "hi", "interval"]]
    if len(un):
        sec.data["predictions"] = frame_table(
            un.rename(columns={"setting": "variant"}),
            id="law-predictions",
            key="variant",
            labels={"pred": "predicted", "lo": f"{int(round(100 * rep.options['level']))}% low", "hi": "high"},
        )
    return sec


def policy_section(an: Analysis) -> Section:
    from lmms_ac.law.plots import plot_recall_curves
    from lmms_ac.law.policy import simulate

    sec = Section("policy", "The policy: which representation to train next")
    sec.empty = _missing_clean_or_ac(an, "to learn from", "the policy ranks candidates by their (A, C) scores")
    if sec.empty:
        return sec
    if not an.law_data:
        sec.empty = (
            "the policy needs at least 2 trained variants with A/C scores on a benchmark; evaluate more "
            "representations with lmms-eval and score their A and C, then rebuild the report."
        )
        return sec
    o = an.options
    # on the table itself, only policies that learn nothing from other benchmarks (a prior would see the
    # same settings on them: optimistic); the evaluate table below judges every policy fairly
    sim = simulate(an.law_data, PAGE_POLICIES, runs=o.policy_runs, seed=o.seed)
    sec.data["recall3"] = figures.via_plot(plot_recall_curves, sim, top=3)
    sec.data["recall1"] = figures.via_plot(plot_recall_curves, sim, top=1)
    frame = sim.to_frame()
    mean = frame[frame["benchmark"] == "mean"]
    policies = list(dict.fromkeys(mean["policy"]))
    views = []
    for metric in ("anytime", "final"):
        for top in (3, 1):
            col = f"{metric}_recall@{top}" if f"{metric}_recall@{top}" in mean.columns else f"recall@{top}"
            wide = mean.pivot_table(index="budget", columns="policy", values=col, sort=False)
            wide = wide[[p for p in policies if p in wide.columns]].reset_index()
            wide.columns = [str(c) for c in wide.columns]
            t = frame_table(wide, digits={c: 2 for c in wide.columns if c != "budget"}, id=f"policy-{metric}-{top}")
            shaded(t, range(1, len(wide.columns)), 0.0, 1.0)
            views.append({"key": f"{metric}{top}", "label": f"{metric} Recall@{top}", "table": t})
    sec.data["recall_views"] = views
    sec.data["ranking"] = sim.options.get("ranking", "")
    sec.data["runs"] = o.policy_runs
    sec.data["k"] = int(mean["k"].max()) if len(mean) else 0
    sec.data["recommendations"], notes = ([], []) if an.example else _recommendations(an)
    sec.notes += notes
    _evaluation(an, sec)
    _coverage(an, sec)
    best = []
    if an.law is not None:
        preds = an.law.prediction_frame()
        un = preds[~preds["scored"]]
        for b, g in un.groupby("benchmark", sort=False):
            top = g.sort_values("pred", ascending=False).iloc[0]
            best.append(
                {"benchmark": b, "variant": top["setting"], "pred": top["pred"], "lo": top["lo"], "hi": top["hi"]}
            )
    if best:
        sec.data["best_untrained"] = frame_table(
            pd.DataFrame(best),
            id="policy-best-untrained",
            key="variant",
            labels={"pred": "predicted", "lo": "interval low", "hi": "high"},
        )
    return sec


#: policies simulated on the page's own table (no prior: it would learn from the same settings)
PAGE_POLICIES = ("bayes-ucb", "region", "ucb", "greedy", "rank-by-a", "random-law", "random")
#: protocols of the page's evaluate table
PAGE_PROTOCOLS = ("leave-family-out", "permuted", "synthetic-related")


def _evaluation(an: Analysis, sec: Section) -> None:
    """The `policy evaluate` table at k'=4 on this table's protocols and synthetic worlds."""
    from lmms_ac.law.evaluate import GOAL_BUDGET, evaluate
    from lmms_ac.law.worlds import WorldOptions

    o = an.options
    ev = evaluate(
        an.law_data, PAGE_PROTOCOLS, runs=o.policy_eval_runs, seed=o.seed, options=WorldOptions(worlds=o.policy_worlds)
    )
    t = ev.table(GOAL_BUDGET)
    sec.data["evaluate"] = frame_table(
        t, id="policy-evaluate", digits={c: 3 for c in t.columns if "@" in c}, key="policy"
    )
    sec.data["evaluate_budget"] = GOAL_BUDGET
    sec.data["evaluate_best"] = ev.best_policy()
    sec.data["evaluate_worlds"] = o.policy_worlds
    sec.notes += [f"evaluate: {n}" for n in ev.notes]


def _coverage(an: Analysis, sec: Section) -> None:
    """Coverage of the law's prediction intervals, leave-one-setting-out, per method."""
    if an.law is None:
        return
    cov = an.law.coverage_frame()
    if len(cov):
        sec.data["coverage"] = frame_table(cov, id="policy-coverage", digits={"coverage": 3}, key="benchmark")
        sec.data["coverage_level"] = an.law.options.get("level")
        sec.data["coverage_used"] = an.law.options.get("interval")


def _recommendations(an: Analysis) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Next variant to train for the average over benchmarks, by the default policy (``DEFAULT_POLICY``)."""
    from lmms_ac.law.policies import DEFAULT_POLICY
    from lmms_ac.law.recommend import recommend

    board = an.board().set_index("variant")
    full = int(board["n_benchmarks"].max())
    trained = {
        str(v): float(r["average"])
        for v, r in board.iterrows()
        if v in an.ac.index and r["n_benchmarks"] == full and not pd.isna(r["average"])
    }
    notes = []
    partial = [str(v) for v, r in board.iterrows() if 0 < r["n_benchmarks"] < full]
    if partial:
        notes.append(
            f"variants missing some benchmarks are treated as untrained by the recommendation: {', '.join(partial)}"
        )
    ac = an.ac.dropna(subset=["A", "C"])  # a variant with A but no C cannot be placed on the plane
    trained = {v: t for v, t in trained.items() if v in ac.index}
    names = [str(v) for v in ac.index]
    out = []
    for policy in (DEFAULT_POLICY,):
        rec = recommend(
            names,
            ac["A"].to_numpy(),
            ac["C"].to_numpy(),
            trained,
            policy=policy,
            seed=an.options.seed,
            expected_worlds=an.options.policy_worlds,
        )
        ranking = rec.ranking.drop(columns=["rank_score"], errors="ignore")
        ranking["trained"] = ranking["trained"].map({True: "yes", False: "no"})
        ranking = ranking.rename(
            columns={
                "score": "measured average",
                "predicted": "law prediction",
                "rank": "rank (among trained / untrained)",
            }
        )
        out.append(
            {
                "policy": policy,
                "next": rec.next,
                "why": rec.why,
                "expected": {k: v for k, v in rec.expected.items() if k != "worlds"},
                "level": rec.level,
                "options": rec.options,
                "notes": rec.notes,
                "n_trained": len(trained),
                "n_candidates": len(names),
                "ranking": frame_table(ranking, id=f"policy-ranking-{policy}", key="variant"),
            }
        )
    return out, notes


def robustness_section(an: Analysis) -> Section:
    from lmms_ac.results.robustness_table import average_drop, primary_rows
    from lmms_ac.results.table import percent_factor

    sec = Section("robustness", "Robustness: how scores fall under each perturbation")
    fill = (
        "run the robustness tasks with lmms-eval, e.g. `lmms-eval --model lmms_ac_llava --tasks "
        "mme_tokperm_5seeds,mme_patchshuffle4_5seeds,mme_pdrop_salient30 ...` (list them with `lmms-ac tasks "
        "--benchmark mme`), then `lmms-ac collect` and rebuild the report"
    )
    detail, _ = an.robustness()
    if detail is None:
        sec.empty = f"the results table has no perturbed runs: {fill}."
        return sec
    detail = detail[[not _map_kind(str(p)) for p in detail["perturbation"]]]
    if detail.empty:
        sec.empty = f"the table holds only token-group probes (drawn as maps below), no robustness runs: {fill}."
        return sec
    factors = {m: percent_factor(g["value"], m) for m, g in an.table.groupby("metric")}
    detail = detail.assign(drop_pct_std=[s * factors.get(m, 1.0) for s, m in zip(detail["drop_std"], detail["metric"])])
    prim = primary_rows(detail, an.options.metrics)
    nan_clean = prim[prim["clean"].isna()][["variant", "base_task"]].drop_duplicates()
    for v, b in nan_clean.itertuples(index=False):
        an.missing.append(f"{v} has perturbed runs of {b} but no clean {b}: run the clean task so its drops exist")
    # the perturbation string names its parameters (patchshuffle4); severity only separates what it does not
    several = prim.groupby("perturbation")["severity"].nunique()
    prim = prim.assign(
        label=[f"{p} @{s}" if several[p] > 1 else p for p, s in zip(prim["perturbation"], prim["severity"])]
    )
    vmax = (
        float(np.nanmax(np.abs(prim["drop_pct_mean"].to_numpy(float)))) if prim["drop_pct_mean"].notna().any() else 1.0
    )
    order = [v for v in an.board()["variant"] if v in set(prim["variant"])] if an._clean is not None else []
    order += sorted(set(prim["variant"]) - set(order))
    cols = sorted(prim["base_task"].unique())
    maps = []
    for label, g in prim.groupby("label", sort=True):
        mean = g.pivot_table(index="variant", columns="base_task", values="drop_pct_mean", dropna=False)
        std = g.pivot_table(index="variant", columns="base_task", values="drop_pct_std", dropna=False)
        rows = [v for v in order if v in set(g["variant"])]
        mean, std = mean.reindex(index=rows, columns=cols), std.reindex(index=rows, columns=cols)
        seeds = int(g["n_seeds"].max())
        spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "one run, no seed spread"
        maps.append(
            {
                "perturbation": label,
                "svg": figures.robustness_heatmap(
                    mean.to_numpy(float),
                    std.to_numpy(float),
                    rows,
                    cols,
                    f"{label}\ndrop per benchmark, {spread}",
                    vmax,
                ),
            }
        )
    sec.data["heatmaps"] = maps
    avg = average_drop(detail, an.options.metrics)
    sec.data["average"] = frame_table(
        avg.drop(columns=["benchmarks"]),
        id="robustness-average",
        key="variant",
        labels={"avg_drop_pct": "mean drop (0-100)", "n_benchmarks": "benchmarks"},
        digits={"avg_drop_pct": 2},
    )
    show = detail[
        [
            "variant",
            "base_task",
            "metric",
            "perturbation",
            "severity",
            "clean",
            "perturbed_mean",
            "perturbed_std",
            "drop_mean",
            "drop_std",
            "drop_pct_mean",
            "drop_pct_std",
            "n_seeds",
        ]
    ]
    sec.data["detail"] = frame_table(
        show,
        id="robustness-detail",
        key="variant",
        labels={
            "base_task": "benchmark",
            "perturbed_mean": "perturbed",
            "perturbed_std": "± std",
            "drop_mean": "drop",
            "drop_std": "± std",
            "drop_pct_mean": "drop (0-100)",
            "drop_pct_std": "± std (0-100)",
            "n_seeds": "seeds",
        },
    )
    return sec


def maps_section(an: Analysis) -> Section:
    from lmms_ac.law.plots import plot_patch_info_loss
    from lmms_ac.report.probe_maps import probe_map
    from lmms_ac.results.table import is_clean, resolve_metric

    sec = Section("maps", "Where the model looks: patch information loss over the token grid")
    t = an.table
    probe = t[[bool(_map_kind(str(p))) for p in t["perturbation"]]]
    if probe.empty:
        sec.empty = (
            "no token-group probe runs in the table: run `lmms-eval --model lmms_ac_llava --tasks "
            "mme,mme_tokgroup_m4 ...` (the clean benchmark and the tag of its 16 keep-one-group tasks; "
            "`toknoise` tasks give importance maps), then `lmms-ac collect` and rebuild the report."
        )
        return sec
    found: Dict[Tuple[str, str, str, int], None] = {}
    for rec in probe[["variant", "base_task", "perturbation"]].drop_duplicates().itertuples(index=False):
        kind = _map_kind(rec.perturbation)
        try:
            m = int(rec.perturbation.split("_")[1].lstrip("m"))
        except (IndexError, ValueError):
            continue
        found[(str(rec.variant), str(rec.base_task), kind, m)] = None
    maps = []
    for variant, base, kind, m in sorted(found):
        clean = t[is_clean(t) & (t["variant"] == variant)]
        if not (clean["task"] == base).any():  # the map is relative to the clean score
            an.missing.append(
                f"{variant} / {base}: no clean run of {base} for the {kind} map; run the task {base} with this "
                "model, `lmms-ac collect` and rebuild the report"
            )
            continue
        try:
            metric = resolve_metric(clean, base, an.options.metrics.get(base))
        except ValueError as err:
            an.missing.append(f"{variant} / {base}: no usable clean metric for the {kind} map ({err})")
            continue
        try:
            arr = probe_map(t, base, m, metric, variant, kind)
        except ValueError as err:
            an.missing.append(f"{kind} map {variant} / {base} ({m}x{m}): {err}")
            continue
        label = "patch information loss" if kind == "pil" else "importance"
        svg = figures.via_plot(plot_patch_info_loss, arr, title=f"{variant} · {base} · {label} ({m}x{m})")
        maps.append({"variant": variant, "benchmark": base, "kind": label, "m": m, "metric": metric, "svg": svg})
    sec.data["maps"] = maps
    if not maps:
        sec.empty = (
            "token-group probe runs exist but no complete map: "
            + "; ".join(x for x in an.missing if " map " in x)
            + ". Run the missing tasks and collect again."
        )
    return sec


def _file_info(path: Optional[Path]) -> Optional[Dict[str, Any]]:
    if path is None:
        return None
    data = path.read_bytes()
    return {
        "path": str(path),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest()[:16],
        "modified": datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds"),
    }


def provenance_section(an: Analysis, config: Mapping[str, Any], sections: Sequence[Section]) -> Section:
    from lmms_ac.io import provenance

    sec = Section("provenance", "Provenance")
    prov = provenance(dict(config))
    sec.data["versions"] = [(k, v) for k, v in prov.items() if v is not None]
    sec.data["generated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sec.data["inputs"] = [x for x in (_file_info(an.inputs.table_path), _file_info(an.inputs.scores_path)) if x]
    t = an.table
    runs = (
        t.groupby("source", sort=False)
        .agg(
            variant=("variant", lambda s: ", ".join(sorted(set(map(str, s))))),
            time=("time", "max"),
            lmms_eval=("lmms_eval_version", lambda s: ", ".join(sorted(set(map(str, s))))),
            tasks=("task", "nunique"),
            rows=("task", "size"),
            config_hashes=(
                "config_hash",
                lambda s: (
                    ", ".join(sorted(set(map(str, s)))[:2]) + (f" (+{len(set(s)) - 2})" if len(set(s)) > 2 else "")
                ),
            ),
        )
        .reset_index()
        .sort_values("time", ascending=False)
    )
    sec.data["runs"] = frame_table(
        runs[["time", "variant", "tasks", "rows", "lmms_eval", "source", "config_hashes"]],
        id="provenance-runs",
        key="variant",
        labels={"lmms_eval": "lmms-eval", "config_hashes": "config hashes"},
    )
    if an.inputs.scores is not None:
        raw = an.inputs.scores
        if {"variant", "score", "value"} <= set(raw.columns):
            keep = [
                c
                for c in ("variant", "score", "value", "n", "method", "split", "config_hash", "time")
                if c in raw.columns
            ]
            sec.data["scores"] = frame_table(raw[keep], id="provenance-scores", key="variant")
        else:
            sec.notes.append(
                f"{an.inputs.scores_path} is a wide A/C file (one row per variant): it records no "
                f"configuration or time; the score store of score-a / score-c does"
            )
    missing = list(an.missing)
    if an._clean is not None:
        for v in an.trained:
            gaps = [b for b in an.benchmarks if pd.isna(an._clean.loc[v, b])]
            if gaps:
                missing.append(
                    f"{v} has no clean score on {', '.join(gaps)}: run lmms-eval --tasks {','.join(gaps)} for it"
                )
        if an.ac is not None:
            no_ac = [v for v in an.trained if v not in an.ac.index]
            if no_ac:
                missing.append(
                    f"no A/C scores for {', '.join(no_ac)}: run lmms-ac score-a / score-c for them "
                    f"(they are left out of the law and the policy)"
                )
    for s in sections:
        if s.empty:
            missing.append(f"{s.title}: {s.empty}")
    sec.data["missing"] = list(dict.fromkeys(missing))
    return sec
