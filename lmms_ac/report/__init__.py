"""``lmms-ac report``: one self-contained HTML page of a study (leaderboard, the law, the policy,
robustness, probe maps, provenance). ``build_report`` is the entry point for other code."""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "Options"]


def __getattr__(name: str) -> Any:  # lazy: `lmms-ac --help` must not import pandas/matplotlib
    if name == "build_report":
        from lmms_ac.report.build import build_report

        return build_report
    if name == "Options":
        from lmms_ac.report.sections import Options

        return Options
    raise AttributeError(name)
