"""``lmms-ac doctor``: the environment checks of ``lmms_ac.doctor``, one line each with its fix."""

from __future__ import annotations

import argparse

from lmms_ac.doctor import FAIL, run_checks


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this environment (lmms-eval, dependency versions, torch/GPU, tasks, mirrors)",
        description="One line per check with the fix; exits 1 when something is broken.",
    )
    p.add_argument("--quick", action="store_true", help="only the cheap checks that run at every model load")
    p.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    findings = run_checks(cheap_only=args.quick)
    for f in findings:
        print(f.line(), flush=True)
    failed = sum(f.status == FAIL for f in findings)
    print(f"\n{failed} problem(s) found" if failed else "\nno problems found")
    return 1 if failed else 0
