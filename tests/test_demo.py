"""`make demo`'s job: the whole pipeline offline, every step through the real commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    lmms_ac = str(Path(sys.executable).parent / "lmms-ac")
    proc = subprocess.run([lmms_ac, "demo", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Demo finished" in proc.stdout
    # each step's output exists: the study's results (one file per task; LLaVA-1.5: mme, seed, mme under tokperm, 5
    # patch-shuffle seeds, 4 token groups; LLaVA-NeXT: mme, seed, mme under tokperm, 5 patch-shuffle seeds), the
    # score store, the table, the reports
    assert len(list((out / "study" / "done").glob("*_results.json"))) == 12 + 8
    models = {m["name"]: m for m in yaml.safe_load((out / "demo-study.yaml").read_text())["models"]}
    assert models["tiny-next"]["probes"] == ["patchshuffle4"]  # NeXT's tiled input refuses the token groups
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
    # the LLaVA-NeXT rows: clean on both benchmarks, token permutation and 5 patch-shuffle seeds on MME, no token
    # group (a silently skipped or failed NeXT job leaves these out)
    nxt = table[(table["variant"] == "tiny-next") & (table["metric"] == "mme_perception_score")]
    assert sorted(nxt["perturbation"]) == ["none"] + ["patchshuffle4"] * 5 + ["tokperm"], nxt
    assert (nxt["n"] == 12).all() and set(table[table["variant"] == "tiny-next"]["base_task"]) == {"mme", "seed"}
    drops = pd.read_csv(out / "study" / "report" / "robustness.csv")
    nxt = drops[(drops["variant"] == "tiny-next") & (drops["metric"] == "mme_perception_score")]
    assert sorted(zip(nxt["perturbation"], nxt["n_seeds"])) == [("patchshuffle4", 5), ("tokperm", 1)]
    assert nxt["clean"].notna().all() and nxt["perturbed_mean"].notna().all()
    for perturbation in ("patchshuffle4", "tokperm"):  # the robustness table the demo prints
        assert re.search(rf"\| tiny-next \| mme \| mme_perception_score \| {perturbation} \|", proc.stdout)
    scores = pd.read_csv(out / "scores.csv")
    assert {"A", "C", "C_ocr", "C@enc", "C@L0", "recon@L1", "attn_img@L1", "knn@L0"} <= set(scores["score"])
    assert len(list((out / "results-zeroshot").glob("**/*_results.json"))) == 1
    board = pd.read_csv(out / "leaderboard.csv")
    assert sorted(board["variant"]) == ["tiny-clip", "tiny-next"] and {"A", "C", "mme", "seed"} <= set(board.columns)
    assert (
        board.set_index("variant").loc["tiny-next", ["mme", "seed", "drop_tokperm", "drop_patchshuffle4"]].notna().all()
    )
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
    robustness = html.split('<section id="robustness"')[1].split("</section>")[0]
    for perturbation in ("patchshuffle4", "tokperm"):
        assert re.search(rf"tiny-next</td>\s*<td[^>]*>{perturbation}<", robustness), perturbation
    times = re.findall(r"\b20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d[^<\s]*", html)
    assert times and all(t.endswith("+00:00") for t in times), times
    # a second run refuses to overwrite the first
    again = subprocess.run([lmms_ac, "demo", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--overwrite" in again.stderr
