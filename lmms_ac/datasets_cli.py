"""``lmms-ac mirror`` and ``lmms-ac datasets``: local copies of task datasets for offline clusters."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mirror", help="save the datasets of lmms-eval tasks to a local directory (run where a hub is reachable)",
                       description="Download each task's dataset and save it with datasets.save_to_disk under DIR, named so "
                                   "that LMMS_AC_DATASETS=DIR makes lmms-eval load it offline.")
    p.add_argument("tasks", nargs="+", metavar="TASK", help="task, group or tag names (e.g. mme seed mmbench_en_dev)")
    p.add_argument("--to", required=True, metavar="DIR", help="mirror directory")
    p.add_argument("--overwrite", action="store_true", help="replace copies that already exist")
    p.add_argument("--include-path", action="append", default=None, help="extra lmms-eval task directory (repeatable)")
    p.set_defaults(func=_mirror)

    w = sub.add_parser("datasets", help="where each task's local dataset copy is expected and whether it is there")
    w.add_argument("tasks", nargs="+", metavar="TASK")
    w.add_argument("--include-path", action="append", default=None)
    w.set_defaults(func=_where)


def _mirror(args: argparse.Namespace) -> int:
    from lmms_ac.local_datasets import mirror_tasks

    for task, path in mirror_tasks(args.tasks, args.to, overwrite=args.overwrite, include_path=args.include_path).items():
        print(f"{task}\t{path}")
    print(f"\nUse it with: export LMMS_AC_DATASETS={args.to}")
    return 0


def _where(args: argparse.Namespace) -> int:
    from lmms_ac.local_datasets import ENV_VAR, dataset_key, find_local_copy, mirror_dirs, task_dataset_configs

    print(f"{ENV_VAR}={':'.join(str(d) for d in mirror_dirs()) or '(unset)'}")
    for task, cfg in sorted(task_dataset_configs(args.tasks, args.include_path).items()):
        found = find_local_copy(cfg["dataset_path"], cfg["dataset_name"])
        key = dataset_key(cfg["dataset_path"], cfg["dataset_name"])
        print(f"{task}\t{cfg['dataset_path']}\t{key}\t{found or 'not found'}")
    return 0
