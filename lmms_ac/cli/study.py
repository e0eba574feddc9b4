"""``lmms-ac study init | plan | run | status | report``: a whole study from one YAML file."""

from __future__ import annotations

import argparse
import sys
import time


def _load(path: str):
    from lmms_ac.study.spec import load_study

    return load_study(path)


def cmd_init(args: argparse.Namespace) -> int:
    from lmms_ac.io import atomic_write_text
    from lmms_ac.study.example import EXAMPLE

    atomic_write_text(args.file, EXAMPLE, overwrite=args.overwrite)
    print(f"wrote {args.file}: edit the models, benchmarks and paths, then `lmms-ac study plan {args.file}`")
    return 0


def _fmt_min(m: float) -> str:
    return f"{m:.0f} min" if m < 90 else f"{m / 60:.1f} h"


def cmd_plan(args: argparse.Namespace) -> int:
    from lmms_ac.study.plan import preflight
    from lmms_ac.study.runner import dry_run, estimate_minutes, prepare

    study = _load(args.file)
    preflight(study)
    prep = prepare(study)
    for note in prep.plan.notes:
        print(f"note: {note}")
    mins = estimate_minutes(prep)
    header = ["job", "kind", "model", "units", "gpus", "est."]
    rows = []
    for j in prep.jobs:
        what = ", ".join(u.task or u.score for u in j.units)
        rows.append(
            [
                j.job_id,
                j.kind,
                j.entry,
                what if len(what) <= 60 else what[:57] + "...",
                str(j.gpus),
                _fmt_min(mins[j.job_id]),
            ]
        )
    if rows:
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    total = sum(mins.values())
    gpu_h = sum(mins[j.job_id] * j.gpus for j in prep.jobs) / 60
    from lmms_ac.study.status import _parallel

    par = _parallel(study)
    print(
        f"\n{len(prep.plan.units)} unit(s): {len(prep.done)} done, {len(prep.pending)} pending in {len(prep.jobs)} "
        "job(s)"
    )
    print(
        f"estimated cost: {_fmt_min(total)} of job time ({gpu_h:.1f} GPU-hours at "
        f"{prep.jobs[0].gpus if prep.jobs else 0} "
        f"GPU(s) per job); about {_fmt_min(total / max(1, min(par, len(prep.jobs) or 1)))} wall-clock at {par} "
        f"job(s) in parallel on the {study.executor.type} executor"
    )
    if args.dry_run:
        for p in dry_run(prep):
            print(f"wrote {p}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lmms_ac.study.plan import preflight
    from lmms_ac.study.runner import execute

    study = _load(args.file)
    preflight(study)
    if args.no_wait and study.executor.type != "slurm":
        raise ValueError(
            "--no-wait is for the slurm executor (set executor.type: slurm); the local executor runs the jobs itself"
        )
    try:
        code = execute(study, retry_failed=args.retry_failed, wait=not args.no_wait)
    except OSError as err:  # the output folder became unwritable mid-run (full disk, read-only remount)
        if isinstance(err, (FileNotFoundError, FileExistsError)):
            raise
        raise ValueError(
            f"cannot write the study output ({err.strerror or err}: {err.filename or study.output_dir}); free space "
            "or fix the folder, then `lmms-ac study run` again: done results are kept"
        ) from None
    if args.report:
        from lmms_ac.study.report import build_study_report

        build_study_report(study)
    return code


def cmd_status(args: argparse.Namespace) -> int:
    from lmms_ac.study.status import compute_status, render_status

    study = _load(args.file)
    while True:
        st = compute_status(study)
        text = render_status(st, study)
        if args.watch:
            sys.stdout.write("\x1b[2J\x1b[H" + text)
            sys.stdout.flush()
            if st.counts["pending"] + st.counts["running"] + st.counts["queued"] + st.counts["interrupted"] == 0:
                return 0
            try:
                time.sleep(args.interval)
            except KeyboardInterrupt:
                return 0
        else:
            sys.stdout.write(text)
            return 0 if st.counts["done"] == sum(st.counts.values()) else 1


def cmd_report(args: argparse.Namespace) -> int:
    from lmms_ac.study.report import build_study_report

    build_study_report(_load(args.file))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run a whole study (models x benchmarks x probes + A/C scores) from one YAML "
        "file, resumably, locally or on SLURM",
        description="A study file lists models, benchmarks, robustness probes, score jobs, the "
        "executor and the reports. `lmms-ac study init FILE` writes a commented example.",
    )
    s = p.add_subparsers(dest="study_command", metavar="{init,plan,run,status,report}")
    q = s.add_parser("init", help="write a commented example study file")
    q.add_argument("file", nargs="?", default="study.yaml")
    q.add_argument("--overwrite", action="store_true", help="replace an existing file")
    q.set_defaults(func=cmd_init)
    q = s.add_parser("plan", help="the job table and the estimated cost (nothing runs)")
    q.add_argument("file")
    q.add_argument(
        "--dry-run",
        action="store_true",
        help="also write the exact commands (and the sbatch script for slurm) to <output>/dry-run/",
    )
    q.set_defaults(func=cmd_plan)
    q = s.add_parser("run", help="run every job not done yet (safe to rerun: done work is skipped)")
    q.add_argument("file")
    q.add_argument("--retry-failed", action="store_true", help="run jobs again that used up executor.max_attempts")
    q.add_argument("--report", action="store_true", help="write the reports afterwards (study report)")
    q.add_argument("--no-wait", action="store_true", help="slurm: submit and return; `study status` follows the jobs")
    q.set_defaults(func=cmd_run)
    q = s.add_parser("status", help="done / running / failed / pending per model and benchmark, counts, ETA")
    q.add_argument("file")
    q.add_argument("--watch", action="store_true", help="refresh until nothing is left to run (Ctrl-C stops)")
    q.add_argument("--interval", type=float, default=10.0, help="seconds between refreshes (default 10)")
    q.set_defaults(func=cmd_status)
    q = s.add_parser(
        "report",
        help="table, scores, leaderboard, law fit, recommendation, robustness, plots, "
        "HTML into <output>/report (on what is done so far)",
    )
    q.add_argument("file")
    q.set_defaults(func=cmd_report)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
