"""The demo stops at the first failing step, including lmms-eval's failures that exit 0."""

from __future__ import annotations

import os
import sys

import pytest

from lmms_ac.cli.demo import StepFailed, _run


def _script(tmp_path, body: str):
    return [sys.executable, "-c", body]


@pytest.mark.slow
def test_nonzero_exit_fails(tmp_path):
    with pytest.raises(StepFailed, match="exit code 3"):
        _run(_script(tmp_path, "print('boom'); raise SystemExit(3)"), dict(os.environ), tmp_path)


@pytest.mark.slow
def test_lmms_eval_logged_failure_with_exit_0_fails(tmp_path):
    body = "print('ERROR | Error during evaluation: No module named filelock._api')"
    with pytest.raises(StepFailed, match="Error during evaluation") as err:
        _run(_script(tmp_path, body), dict(os.environ), tmp_path, lmms_eval_results=tmp_path / "results")
    assert "filelock._api" in str(err.value)  # the step's own error is shown


@pytest.mark.slow
def test_lmms_eval_step_without_new_results_file_fails(tmp_path):
    old = tmp_path / "results" / "m" / "old_results.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")  # an earlier step's results do not count
    with pytest.raises(StepFailed, match="wrote no results file"):
        _run(_script(tmp_path, "print('done')"), dict(os.environ), tmp_path, lmms_eval_results=tmp_path / "results")


@pytest.mark.slow
def test_lmms_eval_step_with_results_passes(tmp_path):
    target = tmp_path / "results" / "m" / "t_results.json"
    body = f"import pathlib; p = pathlib.Path({str(target)!r}); p.parent.mkdir(parents=True); p.write_text('{{}}')"
    _run(_script(tmp_path, body), dict(os.environ), tmp_path, lmms_eval_results=tmp_path / "results")


@pytest.mark.slow
def test_missing_expected_output_fails(tmp_path):
    with pytest.raises(StepFailed, match="expected output missing"):
        _run(_script(tmp_path, "pass"), dict(os.environ), tmp_path, expect=[tmp_path / "scores.csv"])
