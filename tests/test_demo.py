"""`make demo`'s job: the whole pipeline offline, every step through the real commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    lmms_ac = str(Path(sys.executable).parent / "lmms-ac")
    proc = subprocess.run([lmms_ac, "demo", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Demo finished" in proc.stdout
    # each step's output exists: the study's results (one file per task: mme, seed, mme under tokperm, 5
    # patch-shuffle seeds), the score store, the table, the reports
    assert len(list((out / "study" / "done").glob("*_results.json"))) == 8
    for path in (
        "scores.csv",
        "table.csv",
        "leaderboard.csv",
        "figures",
        "report.html",
        "figures/layers_tiny-clip.png",
        "zeroshot/zeroshot_colours.yaml",
    ):
        assert (out / path).exists(), path
    table = pd.read_csv(out / "table.csv")
    assert {"none", "tokperm", "patchshuffle4"} <= set(table["perturbation"])
    scores = pd.read_csv(out / "scores.csv")
    assert {"A", "C", "C_ocr", "C@enc", "C@L0", "recon@L1", "attn_img@L1", "knn@L0"} <= set(scores["score"])
    assert len(list((out / "results-zeroshot").glob("**/*_results.json"))) == 1
    board = pd.read_csv(out / "leaderboard.csv")
    assert board["variant"].tolist() == ["tiny-clip"] and {"A", "C", "mme", "seed"} <= set(board.columns)
    assert (out / "figures" / "law_surface_mme.png").is_file()
    # a second run refuses to overwrite the first
    again = subprocess.run([lmms_ac, "demo", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--overwrite" in again.stderr
