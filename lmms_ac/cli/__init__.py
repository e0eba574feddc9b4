"""The ``lmms-ac`` command line. Every command module is in this folder, one per area, and adds its
sub-commands through ``register(subparsers)``; nothing below the command line imports them. Modules
import their work lazily, so ``lmms-ac --help`` does not import torch or lmms-eval."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from loguru import logger

DESCRIPTION = (
    "which vision representation makes a multimodal LLM good: A and C scores, robustness probes, "
    "the law, studies and their report (lmms-eval plugin)"
)

# each module defines register(subparsers) adding parsers with set_defaults(func=callable(args) -> int)
COMMAND_MODULES = [
    "lmms_ac.cli.datasets",
    "lmms_ac.cli.scores",
    "lmms_ac.cli.alignment",
    "lmms_ac.cli.results",
    "lmms_ac.cli.law",
    "lmms_ac.cli.robustness",
    "lmms_ac.cli.demo",
    "lmms_ac.cli.layers",
    "lmms_ac.cli.doctor",
    "lmms_ac.cli.study",
    "lmms_ac.cli.report",
]


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmms-ac", description=DESCRIPTION)
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
