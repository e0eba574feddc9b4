"""Law commands warn where a user would be misled; paper benchmark names join the group means;
a variant with A but no C stays in the leaderboard with C blank."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from loguru import logger

from lmms_ac.law.data import BenchmarkData, canonical_benchmark, from_wide, load_example
from lmms_ac.law.fit import fit_benchmark, fit_law


@pytest.fixture()
def warnings():
    msgs = []
    handler = logger.add(lambda m: msgs.append(str(m)), level="WARNING", format="{message}")
    yield msgs
    logger.remove(handler)


def bench(n=8, name="b", A=None, C=None, y=None):
    rng = np.random.default_rng(0)
    A = rng.uniform(0, 1, n) if A is None else np.asarray(A, float)
    C = rng.uniform(0, 30, n) if C is None else np.asarray(C, float)
    y = (A + C / 30 + rng.normal(0, 0.05, n)) if y is None else np.asarray(y, float)
    return BenchmarkData(name, tuple(f"s{i}" for i in range(n)), A, C, y)


def test_as_many_settings_as_parameters_warns_r2_is_one(warnings):
    f = fit_benchmark(bench(n=6))
    assert f.models["AC_poly2"].r2 == pytest.approx(1.0)
    assert any("R² = 1 by construction" in w and "AC_poly2" in w for w in f.warnings)
    assert any("by construction" in w for w in warnings)
    assert not any("by construction" in w for w in fit_benchmark(bench(n=9)).warnings)


def test_constant_columns_and_scores_warn(warnings):
    f = fit_benchmark(bench(C=np.full(8, 5.0)))
    assert any("same C" in w for w in f.warnings)
    f = fit_benchmark(bench(A=np.full(8, 0.3)))
    assert any("same A" in w for w in f.warnings)
    f = fit_benchmark(bench(y=np.full(8, 2.0)))
    assert any("same score" in w for w in f.warnings)


def test_missing_cell_names_the_setting(warnings):
    d = bench()
    y = d.score.copy()
    y[3] = np.nan
    f = fit_benchmark(BenchmarkData("b", d.settings, d.A, d.C, y))
    assert any("no score for s3" in w for w in f.warnings)


def test_policy_warns_with_fewer_settings_than_parameters(warnings):
    from lmms_ac.law.policy import simulate_benchmark

    simulate_benchmark(bench(n=5), ["region"], runs=5)
    assert any("5 settings for the law's 6 parameters" in w for w in warnings)
    warnings.clear()
    simulate_benchmark(bench(n=8, C=np.full(8, 1.0)), ["region"], runs=5)
    assert any("same C" in w for w in warnings)


def test_paper_names_get_group_means():
    ex = load_example()
    df = pd.read_csv(__import__("lmms_ac.law.data", fromlist=["x"]).example_path("law-v1"))
    paper = {
        "mmbench_en": "MMBench",
        "mme": "MME",
        "ok_vqa": "OKVQA",
        "seed_image": "SEED",
        "mmmu_val": "MMMU",
        "textvqa_val": "TextVQA",
        "vizwiz_vqa_val": "VizWiz",
        "scienceqa_img": "ScienceQA",
    }
    renamed = df.rename(columns={**paper, **{f"A_embed_{k}": f"A_embed_{v}" for k, v in paper.items()}})
    data = from_wide(
        renamed, setting_col="setting", a_col="A_embed_{benchmark}", c_col="C_pck10", benchmarks=list(paper.values())
    )
    rep = fit_law(data, normalize="minmax")
    ref = fit_law(ex, normalize="minmax")
    assert set(rep.groups) == {"vision", "ocr"}
    for g in ("vision", "ocr"):
        assert rep.groups[g]["AC_poly2"]["complete"]
        assert rep.groups[g]["AC_poly2"]["r2"] == pytest.approx(ref.groups[g]["AC_poly2"]["r2"])
    assert canonical_benchmark("ScienceQA-IMG") == "scienceqa_img" and canonical_benchmark("foo") is None


def test_cli_fit_wide_with_paper_names_prints_group_means(tmp_path, capsys):
    from lmms_ac.cli import main
    from lmms_ac.law.data import example_path

    df = pd.read_csv(example_path("law-v1")).rename(columns={"mme": "MME", "ok_vqa": "OKVQA", "textvqa_val": "TextVQA"})
    path = tmp_path / "wide.csv"
    df.to_csv(path, index=False)
    assert (
        main(
            [
                "fit",
                "--wide",
                str(path),
                "--benchmarks",
                "MME,OKVQA,TextVQA",
                "--a-col",
                "A_embed_mme",
                "--c-col",
                "C_pck10",
                "--random-draws",
                "3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "mean:vision*" in out and "mean:ocr*" in out


def test_leaderboard_with_a_but_no_c(tmp_path, capsys):
    from lmms_ac.cli import main

    rows = []
    for v, val in (("v1", 1500.0), ("v2", 1200.0), ("v3", 1400.0)):
        rows.append(
            {
                "variant": v,
                "task": "mme",
                "metric": "mme_perception_score",
                "value": val,
                "stderr": None,
                "n": 10,
                "perturbation": "none",
                "severity": "",
                "seed": None,
                "base_task": "mme",
                "lmms_eval_version": "x",
                "config_hash": "h",
                "time": "2025-01-01T00:00:00",
                "source": "f",
            }
        )
    table = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    store = tmp_path / "scores.csv"
    pd.DataFrame(
        {
            "variant": ["v1", "v2", "v3", "v1", "v2"],
            "score": ["A", "A", "A", "C", "C"],
            "value": [0.8, 0.4, 0.6, 15.0, 10.0],
        }
    ).to_csv(store, index=False)
    assert main(["leaderboard", str(table), "--scores", str(store)]) == 0
    out = capsys.readouterr().out
    assert "v3" in out
    from lmms_ac.law.data import read_ac_scores

    ac = read_ac_scores(store, allow_missing=True)
    assert np.isnan(ac.loc["v3", "C"]) and ac.loc["v3", "A"] == 0.6
    with pytest.raises(ValueError, match="v3"):
        read_ac_scores(store)
    only_a = tmp_path / "only_a.csv"
    pd.DataFrame({"variant": ["v1", "v2"], "score": ["A", "A"], "value": [0.8, 0.4]}).to_csv(only_a, index=False)
    assert read_ac_scores(only_a, allow_missing=True)["C"].isna().all()


def test_fit_table_with_per_benchmark_a_from_the_score_store(tmp_path, capsys):
    """score-a --method embed --benchmark writes A_embed_<benchmark> rows; fit reads them per benchmark."""
    import json as _json

    from lmms_ac.cli import main

    rng = np.random.default_rng(0)
    variants = [f"v{i}" for i in range(9)]
    rows, store = [], []
    for v in variants:
        a1, a2, c = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0, 30)
        for task, a, metric in (("mme", a1, "mme_perception_score"), ("ok_vqa", a2, "exact_match")):
            rows.append(
                {
                    "variant": v,
                    "task": task,
                    "metric": metric,
                    "value": 100 * a + c,
                    "stderr": None,
                    "n": 10,
                    "perturbation": "none",
                    "severity": "",
                    "seed": None,
                    "base_task": task,
                    "lmms_eval_version": "x",
                    "config_hash": "h",
                    "time": "2025-01-01T00:00:00",
                    "source": "f",
                }
            )
            store.append({"variant": v, "score": f"A_embed_{task}", "value": a})
        store.append({"variant": v, "score": "C", "value": c})
    table, scores = tmp_path / "t.csv", tmp_path / "s.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    pd.DataFrame(store).to_csv(scores, index=False)
    assert (
        main(
            [
                "fit",
                "--table",
                str(table),
                "--scores",
                str(scores),
                "--a-col",
                "A_embed_{benchmark}",
                "--json",
                "--random-draws",
                "3",
            ]
        )
        == 0
    )
    doc = _json.loads(capsys.readouterr().out)
    assert set(doc["benchmarks"]) == {"mme", "ok_vqa"}
    for b in ("mme", "ok_vqa"):  # score = 100 A_b + C exactly: the law with the right A fits perfectly
        assert doc["benchmarks"][b]["models"]["AC_linear"]["r2"] == pytest.approx(1.0)
