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
