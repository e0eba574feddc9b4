"""The ``lmms-ac`` command line. Each area adds its sub-commands through ``register(subparsers)``;
modules are imported lazily enough that ``lmms-ac --help`` does not import torch."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from loguru import logger

# each module defines register(subparsers) adding parsers with set_defaults(func=callable(args) -> int)
COMMAND_MODULES = [
    "lmms_ac.datasets_cli",
    "lmms_ac.scores.cli",
    "lmms_ac.scores.alignment_cli",
    "lmms_ac.results.cli",
    "lmms_ac.law.cli",
    "lmms_ac.robustness.cli",
    "lmms_ac.demo",
    "lmms_ac.layers.cli",
    "lmms_ac.doctor",
    "lmms_ac.study.cli",
    "lmms_ac.report.cli",
]


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmms-ac", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CommandError, FileNotFoundError, FileExistsError, ValueError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        logger.error(str(msg))
        print(f"lmms-ac {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
