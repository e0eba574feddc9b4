"""``lmms-ac fit | policy | plot``: the law of vision representation on your results.

Inputs (one of):
  --example law-v1                       the bundled published data (13 settings, 8 benchmarks)
  --wide FILE [--setting-col setting --a-col A --c-col C --benchmarks b1,b2]
                                         one row per setting; --a-col/--c-col may contain {benchmark}
  --table TABLE --scores AC.csv [--variant-col variant --a-col A --c-col C --benchmarks ... --metric T=M]
                                         the tidy table of ``lmms-ac collect`` plus A/C scores
"""

# Arguments in, report out: the runs are lmms_ac.law.fit_run, policy_run, evaluate_run and recommend_run (inputs:
# law.inputs) and lmms_ac.report.pil_figure. The docstring above is the --help of `lmms-ac fit`.

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, List, Optional, Tuple

from lmms_ac.cli.args import args_config, split_list

if TYPE_CHECKING:
    from lmms_ac.law.inputs import InputSettings

PLOT_FORMATS = "png,svg"


def _note(msg: str) -> None:
    print(msg, file=sys.stderr)


def _tuple(text: Optional[str]) -> Optional[Tuple[str, ...]]:
    items = split_list(text)
    return tuple(items) if items else None


def _inputs(args: argparse.Namespace) -> "InputSettings":
    """The input options (see module doc) as the library's settings."""
    from lmms_ac.law.inputs import InputSettings

    return InputSettings(
        example=args.example,
        wide=args.wide,
        table=args.table,
        scores=args.scores,
        setting_col=args.setting_col,
        variant_col=args.variant_col,
        a_col=args.a_col,
        c_col=args.c_col,
        benchmarks=_tuple(args.benchmarks),
        metric=tuple(args.metric) if args.metric else None,
    )


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


def _formats(args: argparse.Namespace) -> Tuple[str, ...]:
    return tuple(split_list(args.formats) or [])


def cmd_fit(args: argparse.Namespace) -> int:
    from lmms_ac.law.fit_run import FitSettings, run_fit

    settings = FitSettings(
        inputs=_inputs(args),
        normalize=args.normalize,
        interval=args.interval,
        level=args.level,
        random_draws=args.random_draws,
        seed=args.seed,
        coef_out=args.coef_out,
        pred_out=args.pred_out,
        plot=args.plot,
        formats=_formats(args),
        overwrite=args.overwrite,
        config=args_config(args),
    )
    run = run_fit(settings, _note)
    if args.json:
        print(run.to_json())
    else:
        sys.stdout.write(run.text())
    return 0


def _policy_names() -> List[str]:
    from lmms_ac.law.policies import policy_names

    return policy_names()


def _default_policy() -> str:
    from lmms_ac.law.policies import DEFAULT_POLICY

    return DEFAULT_POLICY


def _recommend_policy_names() -> List[str]:
    from lmms_ac.law.policies import recommend_policy_names

    return recommend_policy_names()


def _policy_help() -> str:
    from lmms_ac.law.policies import POLICY_REGISTRY

    return "; ".join(f"{n}: {POLICY_REGISTRY.get(n).help}" for n in _policy_names())


def cmd_policy(args: argparse.Namespace) -> int:
    from lmms_ac.law.policy_run import PolicySettings, run_policy

    settings = PolicySettings(
        inputs=_inputs(args),
        policy=args.policy,
        ranking=args.ranking,
        acquisition=args.acquisition,
        runs=args.runs,
        seed=args.seed,
        ucb_beta=args.ucb_beta,
        ucb_lambda=args.ucb_lambda,
        out=args.out,
        plot=args.plot,
        formats=_formats(args),
        overwrite=args.overwrite,
        config=args_config(args),
    )
    run = run_policy(settings, _note)
    if args.json:
        print(run.to_json())
    else:
        sys.stdout.write(run.text())
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lmms_ac.law.evaluate_run import EvaluateSettings, run_evaluate

    settings = EvaluateSettings(
        inputs=_inputs(args),
        protocols=_tuple(args.protocols),
        policies=_tuple(args.policies),
        worlds=args.worlds,
        runs=args.runs,
        budget=args.budget,
        families=args.families,
        seed=args.seed,
        out=args.out,
        overwrite=args.overwrite,
        config=args_config(args),
    )
    run = run_evaluate(settings)
    if args.json:
        print(run.to_json())
    else:
        sys.stdout.write(run.text())
    return 0


def _evaluated() -> List[str]:
    from lmms_ac.law.protocols import EVALUATED

    return list(EVALUATED)


def _protocol_help() -> str:
    from lmms_ac.law.protocols import PROTOCOL_REGISTRY, protocol_names

    return "; ".join(f"{n}: {PROTOCOL_REGISTRY.get(n).help}" for n in protocol_names())


def cmd_recommend(args: argparse.Namespace) -> int:
    from lmms_ac.law.recommend_run import RecommendSettings, run_recommend

    settings = RecommendSettings(
        candidates=args.candidates,
        trained=args.trained,
        variant_col=args.variant_col,
        a_col=args.a_col,
        c_col=args.c_col,
        score_col=args.score_col,
        benchmark=args.benchmark,
        metric=tuple(args.metric) if args.metric else None,
        policy=args.policy,
        prior=args.prior,
        allow_a_mismatch=args.allow_a_mismatch,
        expected_worlds=args.expected_worlds,
        prior_benchmarks=_tuple(args.prior_benchmarks),
        prior_a_col=args.prior_a_col,
        prior_c_col=args.prior_c_col,
        acquisition=args.acquisition,
        seed=args.seed,
        config=args_config(args),
    )
    run = run_recommend(settings, _note)
    print(run.to_json() if args.json else run.text())
    return 0


def cmd_plot_pil(args: argparse.Namespace) -> int:
    from lmms_ac.report.pil_figure import PilSettings, run_plot_pil

    settings = PilSettings(
        out=args.out,
        array=args.array,
        table=args.table,
        benchmark=args.benchmark,
        m=args.m,
        metric=args.metric,
        variant=args.variant,
        kind=args.kind,
        title=args.title,
        formats=_formats(args),
        overwrite=args.overwrite,
    )
    written = run_plot_pil(settings, print)
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_plot_law(args: argparse.Namespace) -> int:
    from lmms_ac.law.fit_run import PlotLawSettings, run_plot_law

    settings = PlotLawSettings(
        inputs=_inputs(args),
        out_dir=args.out_dir,
        normalize=args.normalize,
        formats=_formats(args),
        overwrite=args.overwrite,
    )
    written = run_plot_law(settings, _note)
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_plot_policy(args: argparse.Namespace) -> int:
    from lmms_ac.law.policy_run import PlotPolicySettings, run_plot_policy

    settings = PlotPolicySettings(
        inputs=_inputs(args),
        out_dir=args.out_dir,
        policy=args.policy,
        ranking=args.ranking,
        runs=args.runs,
        seed=args.seed,
        top=args.top,
        formats=_formats(args),
        overwrite=args.overwrite,
    )
    written = run_plot_policy(settings, _note)
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
