"""The report's "inside the model" section: per-layer curves and zero-shot kept/lost, read from the rows the
`layers`, `layers-knn` and `zeroshot-encoder` commands store and from the collected zero-shot task results."""

from __future__ import annotations

import json

import pandas as pd

from lmms_ac.report import build_report
from lmms_ac.scores.store import ScoreValue, record_score
from lmms_ac.testing.results_fixture import make_table

LAYERS = [0, 2, 4]


def _store(path, variant="tiny-clip"):
    details = {"n_layers": 4, "c_chance": 3.0, "attn_uniform": 0.2, "n_images": 8, "n_pairs": 4}
    values = {"C@enc": 40.0, **{f"C@L{x}": 30.0 - x for x in LAYERS}, **{f"recon@L{x}": 0.9 - x / 10 for x in LAYERS}}
    values.update({f"attn_img@L{x}": 0.3 for x in LAYERS if x >= 1})
    for score, value in values.items():
        record_score(
            path,
            variant=variant,
            vision="clip",
            score=score,
            config={"layers": LAYERS},
            compute=lambda v=value: ScoreValue(value=v, n=8, details=details),
            method="layers",
            split="test",
        )
    for x in (0, 2):
        record_score(
            path,
            variant=variant,
            vision="clip",
            score=f"knn@L{x}",
            config={"k": 3},
            compute=lambda x=x: ScoreValue(value=0.1 + x / 10, n=8),
            method="knn",
            split="train",
        )
    record_score(
        path,
        variant="tiny-clip-encoder",
        vision="clip",
        score="zeroshot_enc:colours",
        config={"set": "colours"},
        compute=lambda: ScoreValue(value=75.0, n=12),
        method="zeroshot",
        split="test",
    )


def _table(tmp_path):
    t = make_table(benchmarks=["mme"], perturbations=[], pil_variants=())
    t = t[t["variant"] == t["variant"].iloc[0]].copy()
    zs = t.iloc[[0]].copy()
    zs["task"], zs["base_task"], zs["metric"], zs["value"], zs["variant"] = (
        "zeroshot_colours",
        "zeroshot_colours",
        "acc",
        0.5,
        "tiny-clip",
    )
    path = tmp_path / "table.csv"
    pd.concat([t, zs]).to_csv(path, index=False)
    return path


def _section(html: str) -> str:
    start = html.index('<section id="inside"')
    return html[start : html.index("</section>", start)]


def test_inside_section_shows_layer_curves_and_zero_shot(tmp_path):
    scores = tmp_path / "scores.csv"
    _store(scores)
    html = build_report(_table(tmp_path), scores, tmp_path / "r.html").read_text()
    sec = _section(html)
    assert "Nothing to show yet" not in sec
    assert sec.count("<svg") == 2  # layer curves + mutual k-NN of tiny-clip
    assert "C@L: keypoint matching" in sec and "mutual" in sec
    assert 'id="zeroshot"' in sec
    assert "MLLM: tiny-clip" in sec and "encoder: tiny-clip-encoder" in sec
    assert ">50.0<" in sec and ">75.0<" in sec  # MLLM 0.5 accuracy shown in %, the encoder's as stored


def test_inside_section_says_which_commands_fill_it(tmp_path):
    table = _table(tmp_path)
    html = build_report(table, None, tmp_path / "r.html").read_text()
    sec = _section(html)
    # zero-shot results alone still give a table; without them the section names the commands
    assert 'id="zeroshot"' in sec and "lmms-ac layers" not in sec.split("Nothing to show yet")[0]
    t = pd.read_csv(table)
    t[~t["task"].str.startswith("zeroshot_")].to_csv(tmp_path / "clean.csv", index=False)
    sec = _section(build_report(tmp_path / "clean.csv", None, tmp_path / "r2.html").read_text())
    assert "Nothing to show yet" in sec and "lmms-ac layers" in sec and "layers-knn" in sec


def test_newest_store_row_wins(tmp_path):
    from lmms_ac.report.inside import latest_rows

    rows = pd.DataFrame(
        {
            "variant": ["v", "v"],
            "score": ["C@L1", "C@L1"],
            "value": ["1.0", "2.0"],
            "time": ["2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00"],
            "details": [json.dumps({}), json.dumps({})],
        }
    )
    assert latest_rows(rows)["value"].tolist() == [2.0]
