"""Small argument helpers shared by the ``lmms-ac`` sub-command modules."""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional


def args_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The parsed options as a plain dict (for provenance and config hashes)."""
    return {k: v for k, v in vars(args).items() if k != "func" and not callable(v)}


def split_list(text: Optional[str]) -> Optional[List[str]]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; empty or None -> None."""
    if not text:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts (``--n``, ``--batch-size``): an integer >= 1, else argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
