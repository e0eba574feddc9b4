"""``lmms-ac report``: the study's tidy table + A/C scores -> one self-contained HTML page."""

from __future__ import annotations

import argparse

from lmms_ac.cli.args import args_config, split_list


def cmd_report(args: argparse.Namespace) -> int:
    from lmms_ac.report.build import build_report
    from lmms_ac.report.sections import Options
    from lmms_ac.results.table import parse_assignments

    if args.runs < 1:
        raise ValueError(f"--runs must be at least 1, got {args.runs}")
    if not 0 < args.level < 1:
        raise ValueError(f"--level must be in (0, 1), got {args.level}")
    options = Options(
        benchmarks=split_list(args.benchmarks),
        metrics=parse_assignments(args.metric),
        normalize=args.normalize,
        interval=args.interval,
        level=args.level,
        policy_runs=args.runs,
        seed=args.seed,
        a_col=args.a_col,
        c_col=args.c_col,
        variant_col=args.variant_col,
        title=args.title,
        example=args.example,
    )
    out = build_report(
        args.table, args.scores, args.out, options=options, overwrite=args.overwrite, config=args_config(args)
    )
    print(f"wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from lmms_ac.law.examples import EXAMPLES
    from lmms_ac.law.options import INTERVALS, NORMALIZATIONS

    p = subparsers.add_parser(
        "report",
        help="one self-contained HTML page: leaderboard, law fit, policy, robustness, probe maps, provenance",
        description="Build one HTML page a lab can share (no network needed to open it): the sortable leaderboard "
        "with law predictions and intervals, how well the law fits, which representation to train next, "
        "robustness drops, patch-information-loss maps and provenance. Sections without data say which "
        "run would fill them.",
    )
    p.add_argument("--table", required=True, metavar="table.csv", help="tidy results table from lmms-ac collect")
    p.add_argument(
        "--scores",
        metavar="scores.csv",
        help="A/C scores: the store written by score-a / score-c, or a CSV with variant, A, C columns",
    )
    p.add_argument("--out", required=True, metavar="report.html", help="output HTML file")
    p.add_argument("--benchmarks", help="comma-separated benchmarks (default: every clean task)")
    p.add_argument("--metric", action="append", metavar="TASK=METRIC", help="metric of a task (repeatable)")
    p.add_argument("--variant-col", default="variant", help="variant column of --scores (default: variant)")
    p.add_argument("--a-col", default="A", help="A score name/column (default: A; e.g. A_embed)")
    p.add_argument("--c-col", default="C", help="C score name/column (default: C; e.g. C_ocr)")
    p.add_argument(
        "--normalize",
        choices=NORMALIZATIONS,
        default="minmax",
        help="law fit normalisation (default: minmax, as the leaderboard's predictions)",
    )
    p.add_argument("--interval", choices=INTERVALS, default="ols", help="prediction interval (default: ols)")
    p.add_argument("--level", type=float, default=0.9, help="interval coverage (default: 0.9)")
    p.add_argument("--runs", type=int, default=1000, help="policy simulation runs per benchmark (default: 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", default="lmms-ac study report", help="page title")
    p.add_argument(
        "--example",
        choices=list(EXAMPLES),
        help="while your results cannot fill the law and policy sections (fewer than 2 trained variants with "
        "A/C), show them on this bundled published example instead, labelled as such",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(func=cmd_report)
