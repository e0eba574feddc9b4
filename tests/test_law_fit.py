"""The law fit: planted quadratics, the published law-v1 R² values, LOO, intervals, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmms_ac.law.data import BenchmarkData, example_path, from_wide, load_example
from lmms_ac.law.fit import MODEL_NAMES, fit_benchmark, fit_law, law_predictions
from lmms_ac.law.linalg import loo_predictions, min_norm_fit, poly_features

PUBLISHED_R2 = {
    "mmbench_en": 0.9634,
    "mme": 0.9736,
    "mmmu_val": 0.8352,
    "ok_vqa": 0.9542,
    "textvqa_val": 0.9028,
    "vizwiz_vqa_val": 0.8038,
    "scienceqa_img": 0.8667,
    "seed_image": 0.9375,
}
W_TRUE = np.array([3.0, -1.5, 2.0, 0.7, -0.4, 1.1])  # 1, A, C, A^2, A*C, C^2


def planted(n=12, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    A, C = rng.uniform(-1, 2, n), rng.uniform(0, 30, n)
    X = np.c_[np.ones(n), A, C, A * A, A * C, C * C]
    y = X @ W_TRUE + noise * rng.normal(size=n)
    return BenchmarkData("planted", tuple(f"s{i}" for i in range(n)), A, C, y)


def test_planted_quadratic_recovered_exactly():
    fit = fit_benchmark(planted(), normalize="none")
    law = fit.models["AC_poly2"]
    np.testing.assert_allclose([law.intercept] + law.coef, W_TRUE, rtol=1e-8, atol=1e-8)
    assert law.r2 == pytest.approx(1.0, abs=1e-12) and law.r2_loo == pytest.approx(1.0, abs=1e-9)
    assert law.spearman == pytest.approx(1.0) and not law.underdetermined
    assert set(fit.models) == set(MODEL_NAMES)
    assert fit.models["AC_linear"].r2 < 1.0


def test_minmax_changes_coefficients_not_r2():
    d = planted(noise=5.0)
    a, b = fit_benchmark(d, normalize="none"), fit_benchmark(d, normalize="minmax")
    for name in ("A_linear", "C_poly2", "AC_linear", "AC_poly2"):
        assert a.models[name].r2 == pytest.approx(b.models[name].r2, abs=1e-10)
        assert a.models[name].r2_loo == pytest.approx(b.models[name].r2_loo, abs=1e-8)
    np.testing.assert_allclose(a.predictions["pred"], b.predictions["pred"], rtol=1e-8)
    assert b.predictions["pred"].notna().all()


def test_law_v1_published_r2_to_4_decimals():
    report = fit_law(load_example("law-v1"), normalize="minmax")
    got = {b: round(f.models["AC_poly2"].r2, 4) for b, f in report.benchmarks.items()}
    assert got == PUBLISHED_R2
    assert report.groups["vision"]["AC_poly2"]["r2"] == pytest.approx(
        np.mean([PUBLISHED_R2[b] for b in ("mmbench_en", "mme", "ok_vqa", "seed_image")]), abs=1e-4
    )
    # LOO is lower than in-sample for every benchmark (6 parameters on 13 points flatter the fit)
    assert all(f.models["AC_poly2"].r2_loo < f.models["AC_poly2"].r2 for f in report.benchmarks.values())


def test_cli_fit_example_json_reproduces_r2(capsys):
    from lmms_ac.cli import main

    assert main(["fit", "--example", "law-v1", "--json", "--random-draws", "5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    got = {b: round(v["models"]["AC_poly2"]["r2"], 4) for b, v in doc["benchmarks"].items()}
    assert got == PUBLISHED_R2
    assert doc["options"]["normalize"] == "minmax" and "provenance" in doc
    assert set(doc["groups"]) == {"vision", "ocr"}
    for b in doc["benchmarks"].values():
        assert set(b["models"]) == set(MODEL_NAMES)
        assert all(set(m) >= {"r2", "r2_loo", "spearman", "spearman_loo"} for m in b["models"].values())


def test_cli_fit_text_wide_template_and_coef_out(tmp_path, capsys):
    from lmms_ac.cli import main

    coef = tmp_path / "coef.csv"
    args = [
        "fit",
        "--wide",
        str(example_path("law-v1")),
        "--a-col",
        "A_embed_{benchmark}",
        "--c-col",
        "C_pck10",
        "--benchmarks",
        "mme,textvqa_val",
        "--normalize",
        "minmax",
        "--random-draws",
        "5",
        "--coef-out",
        str(coef),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0.9736" in out and "0.9028" in out
    c = pd.read_csv(coef)
    assert set(c.benchmark) == {"mme", "textvqa_val"} and len(c[c.model == "AC_poly2"]) == 12
    assert main(args) == 2  # the coefficient file exists
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_loo_matches_explicit_refits():
    rng = np.random.default_rng(3)
    X = poly_features(rng.random((9, 2)), 2)
    y = rng.normal(size=9)
    fast = loo_predictions(X, y)
    slow = []
    for i in range(9):
        keep = np.arange(9) != i
        b, w = min_norm_fit(X[keep], y[keep])
        slow.append(X[i] @ w + b)
    np.testing.assert_allclose(fast, slow, rtol=1e-8, atol=1e-10)
    # underdetermined leave-one-out systems take the explicit path
    np.testing.assert_allclose(loo_predictions(X[:5], y[:5]).shape, (5,))


def test_min_norm_matches_lstsq_with_free_intercept():
    rng = np.random.default_rng(4)
    X, y = rng.random((3, 5)), rng.normal(size=3)
    b, w = min_norm_fit(X, y)
    np.testing.assert_allclose(X @ w + b, y, atol=1e-10)  # interpolates
    Xc, yc = X - X.mean(0), y - y.mean()
    np.testing.assert_allclose(w, np.linalg.lstsq(Xc, yc, rcond=None)[0], atol=1e-10)


def test_underdetermined_warns_and_uses_min_norm():
    from loguru import logger

    msgs = []
    hid = logger.add(lambda m: msgs.append(str(m)), level="WARNING")
    try:
        d = planted(n=4)
        fit = fit_benchmark(d, random_draws=3)
    finally:
        logger.remove(hid)
    assert fit.models["AC_poly2"].underdetermined
    assert any("underdetermined" in m and "minimum-norm" in m for m in msgs)
    assert any("underdetermined" in w for w in fit.warnings)
    assert np.isfinite(fit.models["AC_poly2"].coef).all()


def test_predictions_with_intervals_for_unscored():
    d = planted(n=14, noise=3.0)
    y = d.score.copy()
    truth = y[-2:].copy()
    y[-2:] = np.nan
    d2 = BenchmarkData("p", d.settings, d.A, d.C, y)
    for method in ("ols", "loo"):
        fit = fit_benchmark(d2, interval=method, level=0.95, random_draws=3)
        p = fit.predictions[~fit.predictions["scored"]]
        assert len(p) == 2 and (p["lo"] < p["pred"]).all() and (p["pred"] < p["hi"]).all()
        assert set(p["interval"]) == {method}
        assert fit.n == 12
    ols = fit_benchmark(d2, interval="ols", level=0.99, random_draws=3).predictions.iloc[-2:]
    assert ((ols["lo"] <= truth) & (truth <= ols["hi"])).all()
    np.testing.assert_allclose(law_predictions(d2, "none"), fit.predictions["pred"], rtol=1e-8)


def test_random_baseline_is_seeded_and_low():
    d = planted(noise=50.0, n=13)
    a = fit_benchmark(d, random_draws=20, seed=1).models["random_poly2"]
    b = fit_benchmark(d, random_draws=20, seed=1).models["random_poly2"]
    c = fit_benchmark(d, random_draws=20, seed=2).models["random_poly2"]
    assert a.r2 == b.r2 and a.r2 != c.r2 and a.draws == 20
    assert 0 < a.r2 < 1 and a.r2_loo < a.r2


def _wide():
    return pd.read_csv(example_path("law-v1"))


def test_bad_inputs_name_problem_and_fix():
    kw = dict(setting_col="setting", a_col="A_embed_{benchmark}", c_col="C_pck10")
    with pytest.raises(KeyError, match="did you mean 'mme'"):
        from_wide(_wide(), benchmarks=["mmee"], **kw)
    with pytest.raises(ValueError, match=r"no C column 'C_pck'; did you mean 'C_pck10'.*--c-col"):
        from_wide(_wide(), benchmarks=["mme"], **{**kw, "c_col": "C_pck"})
    with pytest.raises(ValueError, match="no setting column"):
        from_wide(_wide(), benchmarks=["mme"], **{**kw, "setting_col": "model"})
    df = _wide()
    df.loc[2, "setting"] = df.loc[1, "setting"]
    with pytest.raises(ValueError, match="duplicate setting 'CLIP224'"):
        from_wide(df, benchmarks=["mme"], **kw)
    df = _wide()
    df.loc[3, "A_embed_mme"] = np.nan
    with pytest.raises(ValueError, match="'A_embed_mme' is empty/NaN for DINOv2"):
        from_wide(df, benchmarks=["mme"], **kw)
    df = _wide().astype({"mme": object})
    df.loc[0, "mme"] = "n/a"
    with pytest.raises(ValueError, match="non-numeric"):
        from_wide(df, benchmarks=["mme"], **kw)
    with pytest.raises(ValueError, match="no benchmarks"):
        fit_law({})
    one = BenchmarkData("x", ("a", "b"), np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="1 scored setting"):
        fit_benchmark(one)


def test_cli_bad_inputs_exit_nonzero(tmp_path, capsys):
    from lmms_ac.cli import main

    assert main(["fit"]) == 2
    assert "choose exactly one input" in capsys.readouterr().err
    assert main(["fit", "--example", "law-v1", "--benchmarks", "mmbench"]) == 2
    assert "did you mean 'mmbench_en'" in capsys.readouterr().err
    assert main(["fit", "--example", "law-v2"]) == 2
    assert "unknown example 'law-v2'" in capsys.readouterr().err
    assert main(["fit", "--wide", str(tmp_path / "none.csv"), "--benchmarks", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["fit", "--wide", str(example_path("law-v1"))]) == 2
    assert "--benchmarks" in capsys.readouterr().err
    assert main(["fit", "--table", str(tmp_path / "t.csv")]) == 2
    assert "--scores" in capsys.readouterr().err
    dup = tmp_path / "dup.csv"
    _wide().pipe(lambda d: pd.concat([d, d.iloc[:1]])).to_csv(dup, index=False)
    assert (
        main(["fit", "--wide", str(dup), "--benchmarks", "mme", "--a-col", "A_embed_{benchmark}", "--c-col", "C_pck10"])
        == 2
    )
    assert "duplicate setting 'CLIP336'" in capsys.readouterr().err


def test_cli_fit_from_tidy_table_predicts_untrained(tmp_path, capsys):
    from lmms_ac.cli import main
    from lmms_ac.results.table import TABLE_COLUMNS

    d = planted(n=10, noise=1.0)
    rows = [
        {
            "variant": s,
            "task": "mme",
            "metric": "mme_perception_score",
            "value": v,
            "perturbation": "none",
            "config_hash": "h0",
        }
        for s, v in zip(d.settings[:8], d.score[:8])
    ]
    table = pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)
    tpath, acpath = tmp_path / "t.csv", tmp_path / "ac.csv"
    table.to_csv(tpath, index=False)
    pd.DataFrame({"variant": d.settings, "A_ll": d.A, "C_pck": d.C}).to_csv(acpath, index=False)
    assert (
        main(
            [
                "fit",
                "--table",
                str(tpath),
                "--scores",
                str(acpath),
                "--a-col",
                "A_ll",
                "--c-col",
                "C_pck",
                "--json",
                "--random-draws",
                "3",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    preds = doc["benchmarks"]["mme"]["predictions"]
    assert [p["setting"] for p in preds] == ["s8", "s9"]
    assert all(p["lo"] < p["pred"] < p["hi"] for p in preds)


def test_ac_scores_read_from_the_score_store(tmp_path):
    """score-a / score-c write one long CSV; the law reads A and C (or A_embed, C_ocr) from it."""
    from lmms_ac.law.data import read_ac_scores
    from lmms_ac.scores.store import ScoreValue, record_score

    out = tmp_path / "scores.csv"
    for variant, a, c in (("clip", -2.0, 15.0), ("dino", -4.0, 25.0)):
        record_score(out, variant=variant, vision="", score="A", config={"n": 1}, compute=lambda a=a: ScoreValue(a, 1))
        record_score(out, variant=variant, vision="", score="C", config={"n": 1}, compute=lambda c=c: ScoreValue(c, 1))
    record_score(
        out, variant="clip", vision="", score="A", config={"n": 2}, compute=lambda: ScoreValue(-1.5, 2)
    )  # newer config
    ac = read_ac_scores(out)
    assert ac.loc["clip"].tolist() == [-1.5, 15.0] and ac.loc["dino"].tolist() == [-4.0, 25.0]
    with pytest.raises(ValueError, match="no 'A_embed' rows"):
        read_ac_scores(out, a_col="A_embed")
