"""``lmms-ac mirror`` and ``lmms-ac datasets``: local copies of task datasets for offline clusters."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mirror",
        help="save the datasets of lmms-eval tasks to a local directory (run where a hub is reachable)",
        description="Download each task's dataset and save it with datasets.save_to_disk under DIR, named so "
        "that LMMS_AC_DATASETS=DIR makes lmms-eval load it offline.",
    )
    p.add_argument("tasks", nargs="+", metavar="TASK", help="task, group or tag names (e.g. mme seed mmbench_en_dev)")
    p.add_argument("--to", required=True, metavar="DIR", help="mirror directory")
    p.add_argument("--overwrite", action="store_true", help="replace copies that already exist")
    p.add_argument("--include-path", action="append", default=None, help="extra lmms-eval task directory (repeatable)")
    p.set_defaults(func=_mirror)

    w = sub.add_parser(
        "datasets",
        help="where each task's local dataset copy is expected and whether it is there",
        description="List where each task's dataset copy is expected under LMMS_AC_DATASETS and whether it "
        "is there; with --verify, also decode every image strictly and list the bad docs.",
    )
    w.add_argument(
        "tasks", nargs="+", metavar="TASK", help="task, group or tag names (ours included: seed, mme_tokperm...)"
    )
    w.add_argument("--include-path", action="append", default=None, help="extra lmms-eval task directory (repeatable)")
    w.add_argument(
        "--verify",
        action="store_true",
        help="load each task's evaluation docs and decode every image with truncated images refused "
        "(lmms-eval accepts them silently); lists bad docs by doc_id, exit code 1 if any",
    )
    w.set_defaults(func=_where)


def _mirror(args: argparse.Namespace) -> int:
    from lmms_ac.local_datasets import mirror_tasks

    for task, path in mirror_tasks(
        args.tasks, args.to, overwrite=args.overwrite, include_path=args.include_path
    ).items():
        print(f"{task}\t{path}")
    print(f"\nUse it with: export LMMS_AC_DATASETS={args.to}")
    return 0


def _where(args: argparse.Namespace) -> int:
    from lmms_ac.local_datasets import ENV_VAR, dataset_key, find_local_copy, mirror_dirs, missing_mirror_dirs
    from lmms_ac.plugin import task_dataset_configs

    print(f"{ENV_VAR}={':'.join(str(d) for d in mirror_dirs()) or '(unset)'}")
    for missing in missing_mirror_dirs():
        print(f"warning: {ENV_VAR} names {missing}, which is not a directory (lmms-eval will refuse to start)")
    for task, cfg in sorted(task_dataset_configs(args.tasks, args.include_path).items()):
        if not cfg["dataset_path"]:
            print(f"{task}\t(no dataset_path)")
            continue
        found = find_local_copy(cfg["dataset_path"], cfg["dataset_name"])
        key = dataset_key(cfg["dataset_path"], cfg["dataset_name"])
        print(f"{task}\t{cfg['dataset_path']}\t{key}\t{found or 'not found'}")
    return _verify(args.tasks, args.include_path) if args.verify else 0


def _verify(tasks, include_path) -> int:
    from lmms_ac.verify_images import verify_tasks

    bad = 0
    print("\ntask\tsplit\tdocs\timages\tbad")
    reports = verify_tasks(tasks, include_path)
    for r in reports:
        print(f"{r.task}\t{r.split}\t{r.docs}\t{r.images}\t{len(r.bad)}" + ("" if r.columns else "\t(no image column)"))
    for r in reports:
        for b in r.bad:
            where = b.column + (f"[{b.position}]" if b.position is not None else "")
            print(f"BAD\t{r.task}\tdoc_id={b.doc_id}\t{b.ident}\t{where}\t{b.reason}")
        bad += len(r.bad)
    if bad:
        print(
            f"\n{bad} image(s) do not decode strictly: lmms-eval scores a truncated image as a partly blank one "
            "and stops at an image it cannot decode at all (or a decompression bomb). Fix or drop those docs in "
            "the mirror copy (or re-mirror the dataset)."
        )
    return 1 if bad else 0
