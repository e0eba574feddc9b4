"""The law's prediction intervals cover what they claim (leave-one-setting-out), and bad A/C input
(inf, a variant with A but no C) is a named error or a named skip (issues 23 and 20)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from loguru import logger

from lmms_ac.law.data import ac_scores_from_frame, from_wide, load_example
from lmms_ac.law.fit import fit_law
from lmms_ac.law.intervals import coverage, half_widths
from lmms_ac.law.linalg import poly_features
from lmms_ac.law.worlds import WorldOptions, synthetic_world


def _pooled(pairs):
    c = sum(p[0] for p in pairs)
    t = sum(p[1] for p in pairs)
    return c / t


def test_coverage_on_the_law_table_is_within_085_095():
    fits = fit_law(load_example(), normalize="minmax", random_draws=2)
    cov = fits.coverage_frame()
    allrows = cov[cov.benchmark == "all"].set_index("method")
    assert set(allrows.index) == {"ols", "loo", "conformal"}
    assert (allrows.held_out == 104).all()  # 8 benchmarks x 13 settings
    for m in ("ols", "loo", "conformal"):
        assert 0.85 <= allrows.loc[m, "coverage"] <= 0.95, (m, allrows.loc[m, "coverage"])


def test_coverage_on_synthetic_worlds_is_within_085_095():
    rng = np.random.default_rng(3)
    per = {"ols": [], "loo": [], "conformal": []}
    for shape in ("uniform", "correlated", "clusters"):
        for _ in range(30):
            w = synthetic_world(shape, "independent", rng, WorldOptions())
            for m, ct in coverage(w.points, w.y).items():
                per[m].append(ct)
    got = {m: _pooled(pairs) for m, pairs in per.items()}
    assert all(0.85 <= v <= 0.95 for v in got.values()), got


def test_coverage_catches_an_interval_that_is_too_narrow():
    """The measurement can fail: a 50% interval covers about half, far outside 0.85-0.95."""
    rng = np.random.default_rng(4)
    pairs = [
        coverage(synthetic_world("uniform", "independent", rng, WorldOptions()).points, None or w.y, 0.5)["ols"]
        for w in [synthetic_world("uniform", "independent", rng, WorldOptions()) for _ in range(15)]
    ]
    assert _pooled(pairs) < 0.7


def test_conformal_interval_widens_away_from_the_data():
    rng = np.random.default_rng(0)
    pts = rng.random((14, 2)) * 0.5  # the data in one corner
    X = poly_features(pts, 2)
    y = X @ rng.standard_normal(5) + rng.normal(0, 0.1, 14)
    X0 = poly_features(np.array([[0.25, 0.25], [1.0, 1.0]]), 2)
    half, used = half_widths(X, y, X0, "conformal", 0.9, [], "b")
    assert used == "conformal" and half[1] > 2 * half[0]
    warn = []
    half, used = half_widths(X[:6], y[:6], X0, "conformal", 0.9, warn, "b")
    assert used == "loo" and "no residual freedom" in warn[0]


def test_fit_reports_coverage_in_json_and_text(capsys):
    import json

    from lmms_ac.cli import main

    assert main(["fit", "--example", "law-v1", "--interval", "conformal", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in doc["coverage"]} == {"ols", "loo", "conformal"}
    assert doc["benchmarks"]["mme"]["coverage"]["ols"]["held_out"] == 13
    assert main(["fit", "--example", "law-v1"]) == 0
    assert "Coverage of the law's 90% prediction intervals, leave-one-setting-out" in capsys.readouterr().out


def test_inf_in_a_or_c_names_the_row():
    df = pd.DataFrame({"setting": ["a", "b", "c"], "A": [0.1, np.inf, 0.3], "C": [1.0, 2.0, 3.0], "mme": [1, 2, 3]})
    with pytest.raises(ValueError, match=r"column 'A' is infinite for b \(inf\)"):
        from_wide(df, setting_col="setting", a_col="A", c_col="C", benchmarks=["mme"])
    ac = pd.DataFrame({"variant": ["a", "b"], "A": [0.1, 0.2], "C": [-np.inf, 1.0]})
    with pytest.raises(ValueError, match=r"column 'C' is infinite for a \(-inf\)"):
        ac_scores_from_frame(ac, "ac.csv")


def test_inf_in_a_score_store_is_refused_with_its_line(tmp_path):
    from lmms_ac.strict_csv import number

    with pytest.raises(ValueError, match="infinite"):
        number("inf")
    number("nan")  # a missing value stays readable
    number("1e3")


def test_a_variant_with_a_but_no_c_is_skipped_by_the_law_with_its_name():
    msgs = []
    handler = logger.add(lambda m: msgs.append(str(m)), level="WARNING", format="{message}")
    try:
        ac = pd.DataFrame({"variant": ["a", "b", "c"], "A": [0.1, 0.2, 0.3], "C": [1.0, np.nan, 3.0]})
        with pytest.raises(ValueError, match="empty/NaN for b"):
            ac_scores_from_frame(ac, "ac.csv")
        kept = ac_scores_from_frame(ac, "ac.csv", skip_missing=True)
        assert list(kept.index) == ["a", "c"]
        assert any("left out of the law and the policy" in m and "b" in m for m in msgs)
        none = pd.DataFrame({"variant": ["a"], "A": [0.1], "C": [np.nan]})
        with pytest.raises(ValueError, match="no variant has both"):
            ac_scores_from_frame(none, "ac.csv", skip_missing=True)
    finally:
        logger.remove(handler)


def test_cli_fit_and_policy_skip_a_variant_without_c(tmp_path, capsys):
    from lmms_ac.cli import main
    from lmms_ac.testing.results_fixture import write_study

    table, scores = write_study(tmp_path, benchmarks=["mme"], perturbations=[], pil_variants=())
    df = pd.read_csv(scores)
    victim = str(df["variant"].iloc[0])
    df = df[~((df["variant"] == victim) & (df["score"] == "C"))]
    df.to_csv(scores, index=False)
    assert main(["fit", "--table", str(table), "--scores", str(scores)]) == 0
    assert main(["policy", "--table", str(table), "--scores", str(scores), "--runs", "5"]) == 0


def test_inf_in_a_score_store_names_its_line(tmp_path):
    from lmms_ac.law.data import read_ac_scores

    p = tmp_path / "scores.csv"
    p.write_text("variant,score,value,config_hash\na,A,0.5,h\na,C,inf,h\nb,A,0.4,h\nb,C,3.0,h\n")
    with pytest.raises(ValueError, match=r"line 3.*infinite"):
        read_ac_scores(p)
    hand = tmp_path / "ac.csv"
    hand.write_text("variant,A,C\na,0.5,1.0\nb,-inf,2.0\n")
    with pytest.raises(ValueError, match=r"column 'A' is infinite for b \(-inf\)"):
        read_ac_scores(hand)
