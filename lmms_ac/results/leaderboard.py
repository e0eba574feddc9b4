"""Moved to :mod:`lmms_ac.report.leaderboard` (the leaderboard fits the law, so it is a report above
both ``results`` and ``law``). This alias keeps ``lmms_ac.study.report`` working until it imports the
new place; then delete this file (and its entry in tests/test_import_layers.py)."""
from lmms_ac.report.leaderboard import LEADERBOARD_COLUMNS, leaderboard, leaderboard_columns, to_markdown  # noqa: F401
