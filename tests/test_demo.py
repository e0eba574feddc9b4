"""`make demo`'s job: the whole pipeline offline, every step through the real commands."""

from __future__ import annotations

import re
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
    # patch-shuffle seeds, 4 token groups), the score store, the table, the reports
    assert len(list((out / "study" / "done").glob("*_results.json"))) == 12
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
    # the page a newcomer opens first: every section has data, the law and the policy on the published example
    # (labelled), the rest from the demo's own runs; its times in UTC with their offset
    html = (out / "report.html").read_text(encoding="utf-8")
    sections = re.findall(r'<section id="([a-z]+)" class="card( empty-section)?"', html)
    assert [name for name, _ in sections] == [
        "leaderboard",
        "law",
        "policy",
        "robustness",
        "maps",
        "inside",
        "provenance",
    ]
    assert not [name for name, empty in sections if empty], sections
    assert html.count("(published example: law-v1, not your runs)") == 2
    assert "patch information loss (2x2)" in html and 'id="zeroshot"' in html and "MLLM: tiny-clip" in html
    times = re.findall(r"\b20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d[^<\s]*", html)
    assert times and all(t.endswith("+00:00") for t in times), times
    # a second run refuses to overwrite the first
    again = subprocess.run([lmms_ac, "demo", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--overwrite" in again.stderr
