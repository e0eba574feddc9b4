"""``lmms-ac collect | leaderboard | robustness``: results files -> tidy table -> reports."""

from __future__ import annotations

import argparse
import sys

from lmms_ac.cli.args import args_config, split_list

# heavy-ish imports (pandas) happen inside the command functions


def _read_ac(args: argparse.Namespace):
    if not getattr(args, "scores", None):
        return None
    from lmms_ac.law.data import read_ac_scores

    return read_ac_scores(
        args.scores, variant_col=args.variant_col, a_col=args.a_col, c_col=args.c_col, allow_missing=True
    )


def cmd_collect(args: argparse.Namespace) -> int:
    from lmms_ac.results.collect import collect
    from lmms_ac.results.output import check_output, write_csv

    for out in (args.out, args.dropped_out):  # before reading any results: a wrong --out fails at once
        if out:
            check_output(out, args.overwrite)
    got = collect(args.results, mapping=args.mapping, zone=args.lmms_eval_timezone)
    t = got.table
    written = write_csv(t, args.out, args_config(args), overwrite=args.overwrite)
    if args.dropped_out:
        written += write_csv(got.dropped, args.dropped_out, args_config(args), overwrite=args.overwrite)
    print(
        f"collected {len(t)} rows ({t['variant'].nunique()} variants, {t['task'].nunique()} tasks) from "
        f"{len(got.files)} results file(s) -> {args.out}"
    )
    if len(got.dropped):
        print(
            f"{len(got.dropped)} row(s) from older reruns were dropped (newest date kept)"
            + (f"; listed in {args.dropped_out}" if args.dropped_out else "; pass --dropped-out FILE to list them")
        )
    return 0


def _emit(text: str, args: argparse.Namespace) -> None:
    from lmms_ac.results.output import write_text_report

    if args.out:
        write_text_report(text, args.out, args_config(args), overwrite=args.overwrite)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from lmms_ac.report.leaderboard import leaderboard, to_markdown
    from lmms_ac.results.output import spreadsheet_csv
    from lmms_ac.results.table import parse_assignments, read_table

    table = read_table(args.table)
    board = leaderboard(table, _read_ac(args), split_list(args.benchmarks), parse_assignments(args.metric))
    _emit(to_markdown(board, args.digits) if args.format == "md" else spreadsheet_csv(board), args)
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from lmms_ac.report.leaderboard import to_markdown
    from lmms_ac.results.output import spreadsheet_csv, write_csv
    from lmms_ac.results.robustness_table import average_drop, robustness_table
    from lmms_ac.results.table import parse_assignments, read_table

    table = read_table(args.table)
    detail = robustness_table(table)
    avg = average_drop(detail, parse_assignments(args.metric))
    if args.summary_out:
        write_csv(avg, args.summary_out, args_config(args), overwrite=args.overwrite, spreadsheet=True)
    if args.format == "md":
        text = (
            to_markdown(detail, args.digits)
            + "\nAverage drop across benchmarks (0-100 scale):\n\n"
            + to_markdown(avg, args.digits)
        )
    else:
        text = spreadsheet_csv(detail)
        if not args.out and not args.summary_out:
            text += "\n" + spreadsheet_csv(avg)
    _emit(text, args)
    return 0


def _add_ac_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scores", metavar="AC.csv", help="A/C scores CSV (one row per variant)")
    p.add_argument("--variant-col", default="variant", help="variant column of --scores (default: variant)")
    p.add_argument("--a-col", default="A", help="A column of --scores (default: A)")
    p.add_argument("--c-col", default="C", help="C column of --scores (default: C)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "collect",
        help="lmms-eval results files -> one tidy results table (CSV)",
        description="Read lmms-eval results JSONs (directories are searched recursively "
        "for *results*.json) into one tidy table. Reruns of the same (variant, "
        "task, metric, perturbation, severity, seed): the newest date is kept.",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="results JSON/samples JSONL files or directories")
    p.add_argument("--mapping", metavar="FILE", help="variant renaming: JSON {old: new} or CSV old,new")
    p.add_argument("--out", required=True, metavar="table.csv", help="output CSV")
    p.add_argument("--dropped-out", metavar="FILE", help="also write the rows dropped as older reruns")
    p.add_argument(
        "--lmms-eval-timezone",
        metavar="ZONE",
        help="the --timezone lmms-eval ran with: its result dates carry no offset (default: lmms-eval's own, "
        "Asia/Singapore); the table stores every time in UTC with its offset",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_collect)

    p = subparsers.add_parser(
        "leaderboard",
        help="one row per variant: scores, law predictions, average, rank, robustness drops (CSV or Markdown)",
    )
    p.add_argument("table", help="tidy table from lmms-ac collect")
    _add_ac_args(p)
    p.add_argument("--benchmarks", help="comma-separated benchmarks (default: every clean task)")
    p.add_argument("--metric", action="append", metavar="TASK=METRIC", help="metric of a task (repeatable)")
    p.add_argument("--format", choices=["csv", "md"], default="csv")
    p.add_argument("--digits", type=int, default=2, help="decimals in Markdown (default: 2)")
    p.add_argument("--out", metavar="FILE", help="output file (default: stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_leaderboard)

    p = subparsers.add_parser(
        "robustness", help="clean vs perturbed scores and drops per variant/benchmark/perturbation, mean/std over seeds"
    )
    p.add_argument("table", help="tidy table from lmms-ac collect")
    p.add_argument(
        "--metric",
        action="append",
        metavar="TASK=METRIC",
        help="primary metric of a base task for the average (repeatable)",
    )
    p.add_argument("--format", choices=["csv", "md"], default="csv")
    p.add_argument("--digits", type=int, default=2, help="decimals in Markdown (default: 2)")
    p.add_argument("--out", metavar="FILE", help="per-benchmark table (default: stdout)")
    p.add_argument("--summary-out", metavar="FILE", help="average drop across benchmarks (CSV)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_robustness)
