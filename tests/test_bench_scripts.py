"""The shared-prefix benchmark and profile still run end to end (tiny checkpoint, one round): a
benchmark that no longer runs would quietly stop backing the speed figures quoted in the README."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--image-tokens", "16", "--llm-layers", "1", "--llm-hidden", "64"]


def _run(script: str, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", script), *args, *TINY],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_bench_prefix_table_runs_and_checks_outputs():
    out = _run("bench_prefix.py", "--caps", "1", "2", "--per-image", "2", "--requests", "4", "--repeats", "1")
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("2 ")]
    assert [r[1] for r in rows] == ["1", "2"], out
    for r in rows:  # on/off, on/hf and the token ratio are printed as ratios
        assert all(x.endswith("x") for x in r[6:9]), r
    assert "outputs on == off in every cell" in out


@pytest.mark.slow
def test_profile_prefix_counts_tokens():
    out = _run("profile_prefix.py", "--per-image", "4", "--cap", "2", "--requests", "8")
    assert "suffix prefill" in out and "decode step" in out
    counts = next(line for line in out.splitlines() if "counts:" in line)
    # 2 images x 4 questions: sharing prefills fewer tokens than the same rows without it
    assert "2 images encoded, 2 prefixes prefilled" in counts and "as many)" in counts
    assert "bound with every question's suffix prefilled" in out
