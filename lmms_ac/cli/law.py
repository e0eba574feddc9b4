"""``lmms-ac fit | policy | plot``: the law of vision representation on your results.

Inputs (one of):
  --example law-v1                       the bundled published data (13 settings, 8 benchmarks)
  --wide FILE [--setting-col setting --a-col A --c-col C --benchmarks b1,b2]
                                         one row per setting; --a-col/--c-col may contain {benchmark}
  --table TABLE --scores AC.csv [--variant-col variant --a-col A --c-col C --benchmarks ... --metric T=M]
                                         the tidy table of ``lmms-ac collect`` plus A/C scores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from lmms_ac.cli.args import args_config, split_list
from lmms_ac.strict_csv import read_frame

PLOT_FORMATS = "png,svg"


def _error(msg: str) -> Exception:
    from lmms_ac.cli import CommandError

    return CommandError(msg)


def load_inputs(args: argparse.Namespace):
    """``{benchmark: BenchmarkData}`` from the input options (see module doc)."""
    import pandas as pd

    from lmms_ac.law import data as D

    chosen = [n for n in ("example", "wide", "table") if getattr(args, n, None)]
    if len(chosen) != 1:
        raise _error("choose exactly one input: --example law-v1, --wide FILE, or --table TABLE --scores AC.csv")
    benches = split_list(args.benchmarks)
    if args.example:
        ex = D.EXAMPLES.get(args.example)
        if ex is None:
            from lmms_ac.registry import UnknownEntryError

            raise UnknownEntryError("example", args.example, list(D.EXAMPLES))
        if benches:
            D.resolve_benchmarks(benches, D.example_benchmarks(args.example))
        df = pd.read_csv(D.example_path(args.example))
        return D.from_wide(
            df,
            setting_col=args.setting_col or str(ex["setting_col"]),
            a_col=args.a_col or str(ex["a_col"]),
            c_col=args.c_col or str(ex["c_col"]),
            benchmarks=benches or D.example_benchmarks(args.example),
            source=f"example {args.example}",
        )
    if args.wide:
        path = Path(args.wide)
        if not path.exists():
            raise FileNotFoundError(f"wide CSV {path} does not exist")
        if not benches:
            raise _error("--wide needs --benchmarks b1,b2 (the score columns to fit)")
        return D.from_wide(
            read_frame(path, kind="wide CSV"),
            setting_col=args.setting_col or "setting",
            a_col=args.a_col or "A",
            c_col=args.c_col or "C",
            benchmarks=benches,
            source=str(path),
        )
    if not args.scores:
        raise _error("--table needs --scores AC.csv (columns variant, A, C; see --variant-col/--a-col/--c-col)")
    from lmms_ac.results.table import clean_scores, parse_assignments, read_table

    table = read_table(args.table)
    a_col, c_col = args.a_col or "A", args.c_col or "C"
    scores = clean_scores(table, benches, parse_assignments(args.metric))
    if "{benchmark}" in a_col or "{benchmark}" in c_col:  # e.g. A_embed_{benchmark}: one A per benchmark
        out = {}
        for b in D.resolve_benchmarks(benches, [str(c) for c in scores.columns]):
            ac = D.read_ac_scores(
                args.scores,
                variant_col=args.variant_col,
                a_col=a_col.format(benchmark=b),
                c_col=c_col.format(benchmark=b),
                skip_missing=True,
            )
            out.update(D.from_table(scores, ac, [b], source=str(args.table)))
        return out
    ac = D.read_ac_scores(args.scores, variant_col=args.variant_col, a_col=a_col, c_col=c_col, skip_missing=True)
    return D.from_table(scores, ac, benches, source=str(args.table))


def _add_input_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input (choose one)")
    g.add_argument("--example", metavar="NAME", help="bundled example data: law-v1")
    g.add_argument("--wide", metavar="FILE", help="wide CSV, one row per setting")
    g.add_argument("--table", metavar="TABLE", help="tidy results table from lmms-ac collect (with --scores)")
    g.add_argument("--scores", metavar="AC.csv", help="A/C scores CSV for --table")
    g.add_argument("--setting-col", help="setting column of --wide (default: setting)")
    g.add_argument("--variant-col", default="variant", help="variant column of --scores (default: variant)")
    g.add_argument("--a-col", help="A column; may be a template like 'A_embed_{benchmark}' (default: A)")
    g.add_argument("--c-col", help="C column; may contain {benchmark} (default: C)")
    g.add_argument("--benchmarks", help="comma-separated benchmarks (default: all of the input)")
    g.add_argument("--metric", action="append", metavar="TASK=METRIC", help="metric of a task for --table")


def _fmt(v: Optional[float], digits: int = 4) -> str:
    import math

    return "   nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _fit_text(report) -> str:
    from lmms_ac.law.fit import LAW_MODEL, MODEL_NAMES

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
            + " ".join(f"{_fmt(bf.models[n].r2):>13}" for n in names)
            + f" {_fmt(law.r2_loo):>13} {_fmt(law.spearman):>13} {_fmt(law.spearman_loo, 3):>7}"
        )
    for g, models in report.groups.items():
        law = models[LAW_MODEL]
        label = f"mean:{g}" + ("" if law["complete"] else "*")
        lines.append(
            f"{label:<16}{law['n_benchmarks']:>4} "
            + " ".join(f"{_fmt(models[n]['r2']):>13}" for n in names)
            + f" {_fmt(law['r2_loo']):>13} {_fmt(law['spearman']):>13} {_fmt(law['spearman_loo'], 3):>7}"
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


def cmd_fit(args: argparse.Namespace) -> int:
    from lmms_ac.law.fit import fit_law
    from lmms_ac.results.output import json_document, write_csv

    data = load_inputs(args)
    normalize = args.normalize or ("minmax" if args.example else "none")
    report = fit_law(
        data,
        normalize=normalize,
        random_draws=args.random_draws,
        seed=args.seed,
        interval=args.interval,
        level=args.level,
    )
    cfg = args_config(args)
    if args.coef_out:
        write_csv(report.coef_frame(), args.coef_out, cfg, overwrite=args.overwrite, spreadsheet=True)
    if args.pred_out:
        write_csv(report.prediction_frame(), args.pred_out, cfg, overwrite=args.overwrite, spreadsheet=True)
    if args.plot:
        _plot_law(report, Path(args.plot), split_list(args.formats) or [], args.overwrite)
    if args.json:
        print(json_document(report.to_dict(), cfg))
    else:
        sys.stdout.write(_fit_text(report))
    return 0


def _plot_law(report, out_dir: Path, formats: List[str], overwrite: bool) -> List[Path]:
    from lmms_ac.law.plots import plot_law_surface, plot_pred_vs_actual

    written = []
    for b, bf in report.benchmarks.items():
        written += plot_law_surface(bf, out_dir / f"law_surface_{b}", formats, overwrite)
    written += plot_pred_vs_actual(list(report.benchmarks.values()), out_dir / "law_pred_vs_actual", formats, overwrite)
    print(f"wrote {len(written)} figure file(s) to {out_dir}", file=sys.stderr)
    return written


def _policy_names() -> List[str]:
    from lmms_ac.law.policies import policy_names

    return policy_names()


def _default_policy() -> str:
    from lmms_ac.law.policies import DEFAULT_POLICY

    return DEFAULT_POLICY


def _recommend_policy_names() -> List[str]:
    from lmms_ac.law.policies import recommend_policy_names

    return recommend_policy_names()


def _policies(name: str) -> List[str]:
    """A --policy choice -> the policies simulated (each with the random baseline; ``all``: every one)."""
    if name == "all":
        return _policy_names()
    if name not in _policy_names():
        from lmms_ac.registry import UnknownEntryError

        raise UnknownEntryError("policy", name, _policy_names() + ["all"])
    from lmms_ac.law.policies import POLICY_REGISTRY

    baselines = [n for n in _policy_names() if POLICY_REGISTRY.get(n).baseline]
    return [name] + [b for b in baselines if b != name]


def _simulated_policies(name: str, data) -> List[str]:
    """``_policies`` minus the prior policy for ``all`` on a single benchmark (it has no other to learn from)."""
    from lmms_ac.law.policies import POLICY_REGISTRY, simulable_policies

    pols = _policies(name)
    if name == "all":
        for p in sorted(set(pols) - set(simulable_policies(len(data), pols))):
            print(
                f"note: the {p} policy needs at least {POLICY_REGISTRY.get(p).min_benchmarks} benchmarks "
                f"({len(data)} given; its prior is the law on the others); left out",
                file=sys.stderr,
            )
        pols = simulable_policies(len(data), pols)
    return pols


def _policy_help() -> str:
    from lmms_ac.law.policies import POLICY_REGISTRY

    return "; ".join(f"{n}: {POLICY_REGISTRY.get(n).help}" for n in _policy_names())


def _policy_text(report) -> str:
    from lmms_ac.law.policy import METRIC_HELP

    df = report.to_frame()
    tops = sorted(int(c.split("@")[1]) for c in df.columns if c.startswith("anytime_recall@"))
    lines = [
        f"Recall against budget k' ({report.options['runs']} seeded runs per benchmark).",
        f"Ranking: {report.options.get('ranking')} ({report.options.get('ranking_help', '')}).",
        f"  any = {METRIC_HELP['anytime']}",
        f"  fin = {METRIC_HELP['final']}",
        "  random: success when the best setting was trained (any = fin).",
    ]
    if "prior" in report.options:
        lines.append("  prior: evaluated leave-benchmark-out (the prior of each benchmark is the law on the others)")
    for b, g in df.groupby("benchmark", sort=False):
        best = next((c.best for c in report.curves if c.benchmark == b), "")
        lines.append("")
        lines.append(f"{b} (k={int(g['k'].max())}" + (f", best={best})" if best else ")"))
        pols = list(dict.fromkeys(g.policy))
        heads = [f"{p} {m}@{t}" for p in pols for m in ("any", "fin") for t in tops]
        lines.append("  k_  " + " ".join(f"{h:>{max(6, len(h))}}" for h in heads))
        for budget, gb in g.groupby("budget"):
            vals = [r[f"{m}_recall@{t}"] for _, r in gb.iterrows() for m in ("anytime", "final") for t in tops]
            lines.append(f"  {budget:>3} " + " ".join(f"{v:>{max(6, len(h))}.3f}" for h, v in zip(heads, vals)))
    mean = df[df.benchmark == "mean"]
    if (mean.budget == 4).any() and 3 in tops:
        parts = [
            f"{p} {100 * float(g.loc[g.budget == 4, 'anytime_recall@3'].iloc[0]):.1f}% anytime / "
            f"{100 * float(g.loc[g.budget == 4, 'final_recall@3'].iloc[0]):.1f}% final"
            for p, g in mean.groupby("policy", sort=False)
        ]
        lines.append("")
        lines.append("Recall@3 at k'=4, mean over benchmarks: " + ", ".join(parts))
    return "\n".join(lines).replace("k_  ", "k'  ") + "\n"


def cmd_policy(args: argparse.Namespace) -> int:
    from lmms_ac.law.policy import simulate
    from lmms_ac.results.output import json_document, write_csv

    if args.runs < 1:
        raise _error(f"--runs must be at least 1, got {args.runs}")
    data = load_inputs(args)
    report = simulate(
        data,
        _simulated_policies(args.policy, data),
        runs=args.runs,
        seed=args.seed,
        ucb_beta=args.ucb_beta,
        ucb_lambda=args.ucb_lambda,
        ranking=args.ranking,
        acquisition=args.acquisition,
    )
    cfg = args_config(args)
    if args.out:
        write_csv(report.to_frame(), args.out, cfg, overwrite=args.overwrite)
    if args.plot:
        from lmms_ac.law.plots import plot_recall_curves

        out = Path(args.plot)
        formats = split_list(args.formats) or []
        written = []
        for top in (3, 1):
            written += plot_recall_curves(report, out / f"policy_recall{top}", formats, args.overwrite, top)
        print(f"wrote {len(written)} figure file(s) to {out}", file=sys.stderr)
    if args.json:
        print(json_document(report.to_dict(), cfg))
    else:
        sys.stdout.write(_policy_text(report))
    return 0


def _evaluate_text(ev, budget: int) -> str:
    from lmms_ac.law.evaluate import GOAL_BUDGET, GOAL_TOP

    lines = [
        f"Recall at k'={budget} (mean over worlds ± standard error; {ev.options['runs']} seeded runs per world). "
        "Every policy is credited alike: final = the best setting is trained or in the top-n of the "
        "untrained by the policy's prediction after exactly k' trainings; anytime = at some step <= k'.",
        "",
    ]
    t = ev.table(budget)
    if t.empty:
        raise _error(f"--budget {budget}: no protocol has that many candidates (k' runs from 1 to N)")
    tops = sorted(int(c.split("@")[1]) for c in t.columns if c.startswith("final@") and not c.endswith("se"))
    heads = [f"{m}@{n}" for m in ("anytime", "final") for n in tops]
    lines.append(f"{'protocol':<23}{'policy':<13}{'worlds':>7}  " + "  ".join(f"{h:>13}" for h in heads))
    for r in t.to_dict("records"):
        vals = "  ".join(f"{r[h]:>6.3f} ±{r[h + ' se']:.3f}" for h in heads)
        lines.append(f"{r['protocol']:<23}{r['policy']:<13}{r['worlds']:>7}  {vals}")
    goal = ev.goal()
    if goal:
        lines.append("")
        lines.append(
            f"Goal: final Recall@{GOAL_TOP} at k'={GOAL_BUDGET} >= region + 0.05 on leave-family-out and "
            "synthetic-related, never < region - 0.02 on a judged protocol:"
        )
        for pol, g in goal.items():
            diffs = ", ".join(f"{p} {d:+.3f}" for p, d in g["minus_region"].items())
            verdict = {True: "MEETS", False: "no", None: "n/a"}[g["meets_goal"]]
            lines.append(f"  {pol:<12} {verdict:<6} {diffs}")
    lines.append("")
    lines.append(f"best policy on every judged protocol evaluated here: {ev.best_policy()}")
    for n in ev.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines) + "\n"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lmms_ac.law.evaluate import evaluate
    from lmms_ac.law.worlds import WorldOptions
    from lmms_ac.results.output import json_document, write_csv

    if args.runs < 1 or args.worlds < 2 or args.budget < 1:
        raise _error(
            f"--runs and --budget must be >= 1 and --worlds >= 2 (got {args.runs}, {args.budget}, {args.worlds})"
        )
    data = load_inputs(args) if any(getattr(args, n, None) for n in ("example", "wide", "table")) else None
    families = _read_families(args.families) if args.families else None
    ev = evaluate(
        data,
        split_list(args.protocols) or None,
        split_list(args.policies) or _evaluated(),
        runs=args.runs,
        seed=args.seed,
        options=WorldOptions(worlds=args.worlds, families=families),
    )
    cfg = args_config(args)
    if args.out:
        write_csv(ev.frame, args.out, cfg, overwrite=args.overwrite)
    if args.json:
        print(json_document(ev.to_dict(), cfg))
    else:
        sys.stdout.write(_evaluate_text(ev, args.budget))
    return 0


def _read_families(path_text: str):
    """``--families FILE``: a CSV with columns variant, family (the leave-family-out groups)."""
    path = Path(path_text)
    if not path.exists():
        raise FileNotFoundError(f"families file {path} does not exist")
    df = read_frame(path, kind="families CSV")
    missing = [c for c in ("variant", "family") if c not in df.columns]
    if missing:
        raise _error(
            f"{path}: no {missing[0]!r} column (columns: {', '.join(map(str, df.columns))}); need variant,family"
        )
    if df["family"].isna().any() or df["variant"].duplicated().any():
        raise _error(f"{path}: every variant needs one non-empty family (one row per variant)")
    return {str(v): str(f) for v, f in zip(df["variant"], df["family"])}


def _evaluated() -> List[str]:
    from lmms_ac.law.protocols import EVALUATED

    return list(EVALUATED)


def _protocol_help() -> str:
    from lmms_ac.law.protocols import PROTOCOL_REGISTRY, protocol_names

    return "; ".join(f"{n}: {PROTOCOL_REGISTRY.get(n).help}" for n in protocol_names())


def a_definition(column: str) -> str:
    """The A score a column holds, from its name: ``A_embed_{benchmark}`` / ``A_embed_mme`` -> ``A_embed``."""
    base = column.replace("_{benchmark}", "").replace("{benchmark}", "")
    return "A_embed" if base.startswith("A_embed") else base


def _load_prior(args: argparse.Namespace):
    """The prior law of the prior policies: from a table the user names (a bundled example or a wide CSV),
    refused when its A is another definition than the candidates' (unless --allow-a-mismatch)."""

    from lmms_ac.law import data as D
    from lmms_ac.law.prior import law_prior

    name = args.prior
    if name in D.EXAMPLES:
        prior_a = str(D.EXAMPLES[name]["a_col"])
    else:
        prior_a = args.prior_a_col
    mine, theirs = a_definition(args.a_col), a_definition(prior_a)
    if mine != theirs:
        msg = (
            f"the prior's A is {theirs!r} ({prior_a}) but the candidates' A is {mine!r} ({args.a_col}): another "
            "definition, so the prior's law does not apply to these candidates"
        )
        if not args.allow_a_mismatch:
            raise _error(msg + "; use a prior computed with the same A, or --allow-a-mismatch to use it anyway")
        print(f"WARNING: {msg}; used anyway (--allow-a-mismatch)", file=sys.stderr)
    if name in D.EXAMPLES:
        return law_prior(D.load_example(name)), theirs
    path = Path(name)
    if not path.exists():
        raise _error(
            f"--prior {name!r} is neither a bundled example ({', '.join(D.EXAMPLES)}) nor an existing wide CSV"
        )
    benches = split_list(args.prior_benchmarks)
    if not benches:
        raise _error("--prior FILE needs --prior-benchmarks b1,b2 (its score columns)")
    return law_prior(
        D.from_wide(
            read_frame(path, kind="wide CSV"),
            setting_col="setting",
            a_col=args.prior_a_col,
            c_col=args.prior_c_col,
            benchmarks=benches,
            source=str(path),
        )
    ), theirs


def _read_trained(args: argparse.Namespace):
    import pandas as pd

    from lmms_ac.results.table import TABLE_COLUMNS, clean_scores, parse_assignments, validate_table

    path = Path(args.trained)
    if not path.exists():
        raise FileNotFoundError(f"trained scores file {path} does not exist")
    df = read_frame(path, kind="trained scores CSV")
    if all(c in df.columns for c in TABLE_COLUMNS):
        if not args.benchmark:
            raise _error(f"{path} is a results table: choose the benchmark to optimise with --benchmark NAME")
        scores = clean_scores(validate_table(df, str(path)), [args.benchmark], parse_assignments(args.metric))
        return {str(k): float(v) for k, v in scores[args.benchmark].dropna().items()}
    col = args.score_col or args.benchmark or "score"
    for c, what in ((args.variant_col, "variant"), (col, "score")):
        if c not in df.columns:
            raise _error(
                f"{path}: no {what} column {c!r} (columns: {', '.join(map(str, df.columns))}); "
                f"choose it with --{'variant-col' if what == 'variant' else 'score-col'}"
            )
    names = [str(v) for v in df[args.variant_col]]
    if len(set(names)) != len(names):
        dups = sorted({n for n in names if names.count(n) > 1})
        raise _error(f"{path}: duplicate variants {', '.join(dups)}; keep one row per variant")
    vals = pd.to_numeric(df[col], errors="coerce")
    if vals.isna().any():
        bad = [n for n, v in zip(names, vals) if pd.isna(v)]
        raise _error(f"{path}: column {col!r} is empty or non-numeric for {', '.join(bad)}; fix or remove them")
    return dict(zip(names, vals.astype(float)))


def cmd_recommend(args: argparse.Namespace) -> int:
    from lmms_ac.law.data import read_ac_scores
    from lmms_ac.law.policies import DEFAULT_POLICY, POLICY_REGISTRY
    from lmms_ac.law.recommend import recommend
    from lmms_ac.results.output import json_document

    spec = POLICY_REGISTRY.get(args.policy)
    if spec.uses_prior and not args.prior:
        raise _error(
            f"the {args.policy} policy needs a prior from a table you name: --prior FILE --prior-benchmarks b1,b2 "
            "(or --prior law-v1, whose A is A_embed); its A and C must be the candidates' definitions"
        )
    if args.prior and not spec.uses_prior:
        raise _error(f"--prior is read only by the prior policies (prior, prior-check), not by {args.policy}")
    ac = read_ac_scores(
        args.candidates, variant_col=args.variant_col, a_col=args.a_col, c_col=args.c_col, skip_missing=True
    )
    trained = _read_trained(args)
    prior = _load_prior(args)[0] if spec.uses_prior else None
    rec = recommend(
        list(ac.index),
        ac["A"].to_numpy(),
        ac["C"].to_numpy(),
        trained,
        policy=args.policy,
        seed=args.seed,
        prior=prior,
        acquisition=args.acquisition,
        expected_worlds=args.expected_worlds,
    )
    if args.policy == DEFAULT_POLICY:
        rec.notes.insert(
            0,
            f"{DEFAULT_POLICY} is the default: the policy `lmms-ac policy evaluate` found above region on "
            "every protocol that hides what a user could not know (README: Judging a policy)",
        )
    if args.json:
        print(json_document(rec.to_dict(), args_config(args)))
        return 0
    print(f"next to train ({rec.policy} policy): {rec.next if rec.next else '(nothing left)'}")
    if rec.why:
        print(f"  why: {rec.why}")
    if rec.expected:
        parts = [f"{k} {v:.2f}" for k, v in rec.expected.items() if k != "worlds"]
        print(
            f"  expected ({int(rec.expected['worlds'])} random laws on these candidates' (A, C)): " + ", ".join(parts)
        )
    if rec.level is not None:
        print(f"  region level {rec.level}; eligible cells: " + "; ".join(rec.options))
    elif rec.options:
        print("  order of the untrained candidates: " + ", ".join(rec.options))
    for n in rec.notes:
        print(f"  note: {n}")
    print("")
    print(rec.ranking.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_plot_pil(args: argparse.Namespace) -> int:
    import numpy as np

    from lmms_ac.law.plots import plot_patch_info_loss

    if bool(args.array) == bool(args.table):
        raise ValueError("plot pil takes either an ARRAY file or --table (with --benchmark, --m and --metric)")
    if args.table:
        from lmms_ac.report.probe_maps import probe_map
        from lmms_ac.results.table import read_table

        if not (args.benchmark and args.m and args.metric):
            raise ValueError(
                "--table needs --benchmark (e.g. mme), --m (groups per side) and --metric (e.g. mme_perception_score)"
            )
        arr = probe_map(read_table(args.table), args.benchmark, args.m, args.metric, args.variant, args.kind)
        print(np.array2string(arr, precision=3))
    else:
        path = Path(args.array)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise FileNotFoundError(f"array file {path} {what}; give an .npy or comma-separated text file")
        try:
            arr = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, delimiter=",", ndmin=2)
        except (ValueError, OSError, UnicodeDecodeError) as err:
            raise ValueError(f"array file {path} is not a numeric .npy or CSV array ({err})") from None
    written = plot_patch_info_loss(arr, args.out, split_list(args.formats) or [], args.overwrite, title=args.title)
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_plot_law(args: argparse.Namespace) -> int:
    from lmms_ac.law.fit import fit_law

    report = fit_law(load_inputs(args), normalize=args.normalize or ("minmax" if args.example else "none"))
    written = _plot_law(report, Path(args.out_dir), split_list(args.formats) or [], args.overwrite)
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_plot_policy(args: argparse.Namespace) -> int:
    from lmms_ac.law.plots import plot_recall_curves
    from lmms_ac.law.policy import simulate

    data = load_inputs(args)
    report = simulate(
        data, _simulated_policies(args.policy, data), runs=args.runs, seed=args.seed, ranking=args.ranking
    )
    out = Path(args.out_dir)
    written = plot_recall_curves(
        report, out / f"policy_recall{args.top}", split_list(args.formats) or [], args.overwrite, args.top
    )
    print("wrote " + ", ".join(map(str, written)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from lmms_ac.law import options as O

    # ---- fit
    p = subparsers.add_parser(
        "fit",
        help="fit the law Z ~ f(A, C) per benchmark: R², LOO R², Spearman, predictions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_input_args(p)
    p.add_argument(
        "--normalize",
        choices=O.NORMALIZATIONS,
        help="min-max normalise A, C and score first (default: minmax for --example, else none)",
    )
    p.add_argument(
        "--interval",
        choices=O.INTERVALS,
        default="ols",
        help="prediction interval: OLS (Student t), leave-one-out residual quantile, or conformal (studentised "
        "jackknife); `fit` prints each one's leave-one-setting-out coverage (default: ols)",
    )
    p.add_argument("--level", type=float, default=0.9, help="interval coverage (default: 0.9)")
    p.add_argument("--random-draws", type=int, default=100, help="draws of the random baseline (default: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON document of every R² instead of text")
    p.add_argument("--coef-out", metavar="FILE", help="write the coefficients (CSV)")
    p.add_argument("--pred-out", metavar="FILE", help="write fitted/LOO/predicted scores with intervals (CSV)")
    p.add_argument("--plot", metavar="DIR", help="write law surfaces and predicted-vs-actual figures to DIR")
    p.add_argument("--formats", default=PLOT_FORMATS, help=f"figure formats (default: {PLOT_FORMATS})")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_fit)

    # ---- policy (simulation) + policy recommend
    p = subparsers.add_parser(
        "policy",
        help="simulate the AC policy (Recall@1/@3 vs budget) or recommend the next variant to train",
        description="Simulate which settings a policy trains and how often the law's "
        "ranking finds the best one (docs/METHODS.md#policies). "
        "`lmms-ac policy recommend --help` for the recommend mode.",
    )
    _add_input_args(p)
    p.add_argument(
        "--policy",
        choices=_policy_names() + ["all"],
        default="region",
        help="the policy to simulate, with the random baseline; or all (default: region). " + _policy_help(),
    )
    p.add_argument(
        "--ranking",
        choices=O.RANKINGS,
        default="measured",
        help="what ranks the settings when recall is scored. measured (default): trained settings by "
        "their measured score, untrained by prediction (a hit: the best setting was trained or is "
        "in the predicted top-n of the untrained); law: every setting by the law's prediction, "
        "as in the paper. Both recall metrics are reported: anytime Recall@n at k' (a hit at "
        "some step <= k') and final Recall@n (a hit after exactly k' trainings, the paper's "
        "Algorithm 3)",
    )
    p.add_argument(
        "--acquisition",
        choices=O.ACQUISITIONS,
        default="ei",
        help="prior policy: expected improvement (default) or Thompson sampling",
    )
    p.add_argument("--runs", type=int, default=1000, help="seeded runs per benchmark (default: 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ucb-beta", type=float, default=2.0, help="UCB exploration weight (default: 2)")
    p.add_argument("--ucb-lambda", type=float, default=0.1, help="UCB prior precision (default: 0.1)")
    p.add_argument("--json", action="store_true", help="print a JSON document of the recall curves")
    p.add_argument("--out", metavar="FILE", help="write the recall curves (CSV)")
    p.add_argument("--plot", metavar="DIR", help="write recall-curve figures to DIR")
    p.add_argument("--formats", default=PLOT_FORMATS, help=f"figure formats (default: {PLOT_FORMATS})")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_policy)
    sub = p.add_subparsers(dest="policy_command", metavar="{recommend,evaluate}")
    e = sub.add_parser(
        "evaluate",
        help="every policy under protocols that hide what a user could not know (Recall@1/@3 with standard errors)",
        description="Evaluate the policies on worlds that hide what a user could not know: leave-one-family-out, "
        "synthetic worlds, a permuted-(A, C) control (docs/METHODS.md#choosing-what-to-train). Protocols: "
        + _protocol_help(),
    )
    _add_input_args(e)
    e.add_argument("--protocols", help="comma-separated protocols (default: all; table ones need an input)")
    e.add_argument("--policies", help="comma-separated policies (default: " + ",".join(_evaluated()) + ")")
    e.add_argument("--worlds", type=int, default=200, help="synthetic worlds per shape; permutations (default: 200)")
    e.add_argument("--runs", type=int, default=20, help="seeded runs per world and policy (default: 20)")
    e.add_argument("--budget", type=int, default=4, help="the k' of the printed table (default: 4; --out has all)")
    e.add_argument(
        "--families",
        metavar="CSV",
        help="variant,family of each setting for leave-family-out (default: from the names: clip, siglip, dinov2, "
        "diffusion, '+' combinations, else the name before its first digit or separator)",
    )
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", action="store_true", help="print a JSON document (table, goal, curves)")
    e.add_argument("--out", metavar="FILE", help="write every curve with its standard error (CSV)")
    e.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    e.set_defaults(func=cmd_evaluate)
    r = sub.add_parser("recommend", help="which variant to train next and the current predicted ranking")
    r.add_argument("--candidates", required=True, metavar="AC.csv", help="A/C scores of every candidate")
    r.add_argument(
        "--trained",
        required=True,
        metavar="SCORES.csv",
        help="scores of the trained variants: variant + score column, or a results table",
    )
    r.add_argument("--variant-col", default="variant")
    r.add_argument("--a-col", default="A")
    r.add_argument("--c-col", default="C")
    r.add_argument("--score-col", help="score column of --trained (default: --benchmark or 'score')")
    r.add_argument("--benchmark", help="benchmark to optimise when --trained is a results table")
    r.add_argument("--metric", action="append", metavar="TASK=METRIC")
    r.add_argument(
        "--policy",
        choices=_recommend_policy_names(),
        default=_default_policy(),
        help=f"the policy that chooses (default: {_default_policy()}, the best under `lmms-ac policy evaluate`: "
        "above region on every protocol that hides what a user could not know)",
    )
    r.add_argument(
        "--prior",
        help="prior policies only: the table whose law is the prior, a bundled example (law-v1: its A is A_embed) "
        "or a wide CSV (with --prior-benchmarks); refused when its A is another definition than --a-col",
    )
    r.add_argument(
        "--allow-a-mismatch", action="store_true", help="use a --prior whose A definition differs (warned loudly)"
    )
    r.add_argument(
        "--expected-worlds",
        type=int,
        default=100,
        help="random laws on the candidates' (A, C) to measure the expected recall (0: skip; default: 100)",
    )
    r.add_argument("--prior-benchmarks", help="score columns of a --prior CSV")
    r.add_argument("--prior-a-col", default="A", help="A column of a --prior CSV; may contain {benchmark}")
    r.add_argument("--prior-c-col", default="C", help="C column of a --prior CSV")
    r.add_argument("--acquisition", choices=O.ACQUISITIONS, default="ei")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_recommend)

    # ---- plot
    p = subparsers.add_parser(
        "plot", help="figures: law surfaces, predicted vs actual, policy recall, patch information loss"
    )
    sub = p.add_subparsers(dest="plot_command", metavar="{law,policy,pil}")
    q = sub.add_parser("law", help="law surface per benchmark + predicted vs actual")
    _add_input_args(q)
    q.add_argument("--normalize", choices=O.NORMALIZATIONS)
    q.add_argument("--out-dir", required=True)
    q.add_argument("--formats", default=PLOT_FORMATS)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_plot_law)
    q = sub.add_parser("policy", help="recall curves of the policies")
    _add_input_args(q)
    q.add_argument("--policy", choices=_policy_names() + ["all"], default="all")
    q.add_argument("--ranking", choices=O.RANKINGS, default="measured")
    q.add_argument("--runs", type=int, default=1000)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--top", type=int, choices=[1, 3], default=3)
    q.add_argument("--out-dir", required=True)
    q.add_argument("--formats", default=PLOT_FORMATS)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_plot_policy)
    q = sub.add_parser(
        "pil", help="heat map of patch information loss or importance (from the tidy table, or an M x M array)"
    )
    q.add_argument("array", nargs="?", help="M x M array: .npy or comma-separated text (or use --table)")
    q.add_argument("--table", help="tidy table from lmms-ac collect holding the clean and per-group probe runs")
    q.add_argument("--benchmark", help="base task, e.g. mme")
    q.add_argument("--m", type=int, help="groups per side of the token grid (tasks <benchmark>_tokgroup_m<M>_g<g>)")
    q.add_argument("--metric", help="metric to compare, e.g. mme_perception_score")
    q.add_argument("--variant", help="variant (needed when the table holds several)")
    q.add_argument(
        "--kind",
        choices=["pil", "importance"],
        default="pil",
        help="pil: (clean - score) / clean; importance: noise importance from toknoise draws",
    )
    q.add_argument("--out", required=True, help="output stem (extensions added per format)")
    q.add_argument("--title")
    q.add_argument("--formats", default=PLOT_FORMATS)
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=cmd_plot_pil)
