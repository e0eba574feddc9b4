"""The AC policy simulation: region sampling as written, recall on planted laws, seeds, recommend."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmms_ac.law.data import BenchmarkData, load_example
from lmms_ac.law.policy import (
    UCB_WARMUP,
    cell_ids,
    law_hits,
    normalize_plane,
    recall_from_orders,
    recommend,
    region_next,
    region_orders,
    simulate,
    simulate_benchmark,
    ucb_orders,
)


def quadratic_bench(k=12, seed=0, name="quad"):
    rng = np.random.default_rng(seed)
    A, C = rng.uniform(0, 1, k), rng.uniform(0, 50, k)
    a, c = (A - A.min()) / np.ptp(A), (C - C.min()) / np.ptp(C)
    y = 1.0 + 2.0 * a + 1.5 * c - 1.2 * a * a + 0.8 * a * c - 0.5 * c * c
    return BenchmarkData(name, tuple(f"s{i}" for i in range(k)), A, C, y)


def test_cells_upper_edge_belongs_to_last_cell():
    pts = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.49], [1.0, 0.0]])
    assert list(cell_ids(pts, 1)) == [0, 3, 2, 2]
    assert list(cell_ids(pts, 2)) == [0, 15, 9, 12]


def test_region_orders_follow_the_levels():
    d = load_example()["mme"]
    pts = normalize_plane(d.A, d.C)
    orders = region_orders(pts, 500, np.random.default_rng(0))
    k = len(pts)
    assert (np.sort(orders, axis=1) == np.arange(k)).all()  # each run is a permutation
    lvl1 = cell_ids(pts, 1)
    m1 = len(np.unique(lvl1))
    # level 1: one setting from every non-empty cell, in random order
    first = lvl1[orders[:, :m1]]
    assert all(len(set(r)) == m1 for r in first)
    # level 2: the next samples come from distinct level-2 cells holding no sampled setting
    lvl2 = cell_ids(pts, 2)
    for r in orders[:50]:
        taken = set(lvl2[r[:m1]])
        nxt = []
        for s in r[m1:]:
            if lvl2[s] in taken or lvl2[s] in nxt:
                break
            nxt.append(lvl2[s])
        eligible = set(lvl2) - taken
        assert set(nxt) == eligible  # the whole level-2 sweep came before anything else
    # the first pick is uniform over level-1 cells, then uniform within the cell
    counts = np.bincount(orders[:, 0], minlength=k) / len(orders)
    expect = np.array([1.0 / m1 / np.sum(lvl1 == lvl1[i]) for i in range(k)])
    np.testing.assert_allclose(counts, expect, atol=0.06)


def test_identical_points_still_get_ordered():
    pts = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    orders = region_orders(pts, 20, np.random.default_rng(1))
    assert (np.sort(orders, axis=1) == np.arange(3)).all()


def test_exact_quadratic_region_reaches_full_recall_at_six():
    d = quadratic_bench()
    curve = simulate_benchmark(d, ["region"], runs=300, seed=0)[0]
    assert curve.recall[3][5:].min() == 1.0  # k' >= 6
    assert curve.recall[1][5:].min() == 1.0
    assert curve.recall[3][0] == pytest.approx(curve.recall[1][0])  # one sample: success iff it is the best


def test_random_baseline_is_k_over_kprime():
    d = quadratic_bench(k=13)
    curve = simulate_benchmark(d, ["random"], runs=1000, seed=3)[0]
    kp = np.arange(1, 14)
    np.testing.assert_allclose(curve.recall[3], kp / 13, atol=0.05)
    np.testing.assert_array_equal(curve.recall[1], curve.recall[3])
    assert curve.recall[3][-1] == 1.0


def test_same_seed_same_result_other_seed_differs():
    data = load_example()
    a = simulate(data, ["region", "ucb", "random"], runs=200, seed=7).to_frame()
    b = simulate(data, ["region", "ucb", "random"], runs=200, seed=7).to_frame()
    c = simulate(data, ["region", "ucb", "random"], runs=200, seed=8).to_frame()
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_vectorised_recall_matches_a_plain_sklearn_loop():
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import PolynomialFeatures

    d = load_example()["textvqa_val"]
    pts, y = normalize_plane(d.A, d.C), d.score
    best = int(np.argmax(y))
    orders = region_orders(pts, 60, np.random.default_rng(5))
    hits = law_hits(orders, pts, y, best, (1, 3))
    poly = PolynomialFeatures(2)
    X = poly.fit_transform(pts)
    for r in range(len(orders)):
        for t in range(1, len(y)):
            idx = orders[r, : t + 1]
            pred = LinearRegression().fit(X[idx], y[idx]).predict(X)
            ahead = int((pred > pred[best]).sum())
            if np.isclose(pred, pred[best], rtol=0, atol=1e-9).sum() > 1:
                continue  # exact ties: ours counts them against the best
            assert hits[r, t, 0] == (ahead < 1) and hits[r, t, 1] == (ahead < 3), (r, t)


def test_ucb_warm_up_is_region_and_orders_are_permutations():
    d = quadratic_bench(k=15, seed=2)
    pts = normalize_plane(d.A, d.C)
    reg = region_orders(pts, 100, np.random.default_rng(11))
    ucb = ucb_orders(pts, d.score, 100, np.random.default_rng(11))
    np.testing.assert_array_equal(reg[:, :UCB_WARMUP], ucb[:, :UCB_WARMUP])
    assert (np.sort(ucb, axis=1) == np.arange(15)).all()
    rec = recall_from_orders(ucb, pts, d.score, int(np.argmax(d.score)))
    assert rec[3][5:].min() == 1.0


def test_report_frames_and_headline_on_bundled_data():
    rep = simulate(load_example(), ["region", "random"], runs=1000, seed=0)
    df = rep.to_frame()
    assert set(df.policy) == {"region", "random"} and "mean" in set(df.benchmark)
    assert rep.at(4, 3, "region") > 0.75 > 0.4 > rep.at(4, 3, "random")
    assert rep.at(4, 3, "random") == pytest.approx(4 / 13, abs=0.04)
    doc = rep.to_dict()
    assert len(doc["benchmarks"]["mme"]["policies"]["region"]["recall@3"]) == 13


def test_recommend_region_and_ucb():
    d = quadratic_bench(k=10, seed=4)
    names = list(d.settings)
    r0 = recommend(names, d.A, d.C, {}, seed=0)
    assert r0.level == 1 and r0.next in names and r0.ranking["predicted"].isna().all()
    pts = normalize_plane(d.A, d.C)
    level, cells = region_next(pts, np.zeros(10, bool))
    assert level == 1 and sorted(i for c in cells for i in c) == list(range(10))
    trained = {n: float(v) for n, v in zip(names[:6], d.score[:6])}
    r = recommend(names, d.A, d.C, trained, policy="ucb")
    assert r.next in names[6:] and r.level is None
    top = r.ranking.iloc[0]
    assert top["variant"] == names[int(np.argmax(d.score))]  # exact quadratic, 6 points: the law is exact
    assert recommend(names, d.A, d.C, trained, seed=1).next not in trained
    with pytest.raises(KeyError, match="did you mean 's1'"):
        recommend(names, d.A, d.C, {"s1x": 1.0})
    assert recommend(names, d.A, d.C, dict(zip(names, d.score))).next is None


def test_cli_policy_json_and_text(capsys, tmp_path):
    from lmms_ac.cli import main

    assert main(["policy", "--example", "law-v1", "--runs", "200", "--json", "--policy", "all"]) == 0
    doc = json.loads(capsys.readouterr().out)
    from lmms_ac.law.policies import policy_names

    assert set(doc["mean"]) == set(policy_names())
    assert len(doc["mean"]["region"]["recall@3"]) == 13 and "provenance" in doc
    out = tmp_path / "curves.csv"
    assert main(["policy", "--example", "law-v1", "--runs", "100", "--benchmarks", "mme", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Recall@3 at k'=4" in text and "region" in text and "random" in text
    assert set(pd.read_csv(out).policy) == {"region", "random"}
    assert main(["policy", "--example", "law-v1", "--runs", "100", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["policy", "--example", "law-v1", "--runs", "0"]) == 2


def test_cli_recommend(tmp_path, capsys):
    from lmms_ac.cli import main

    d = quadratic_bench(k=8, seed=6)
    cand, trained = tmp_path / "ac.csv", tmp_path / "scores.csv"
    pd.DataFrame({"variant": d.settings, "A": d.A, "C": d.C}).to_csv(cand, index=False)
    pd.DataFrame({"variant": d.settings[:3], "score": d.score[:3]}).to_csv(trained, index=False)
    assert main(["policy", "recommend", "--candidates", str(cand), "--trained", str(trained), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["next"] in d.settings[3:] and len(doc["ranking"]) == 8
    assert main(["policy", "recommend", "--candidates", str(cand), "--trained", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "next to train (bayes-ucb policy)" in out and "why: highest upper confidence bound" in out
    assert "expected (" in out and "bayes-ucb is the default" in out
    assert (
        main(["policy", "recommend", "--candidates", str(cand), "--trained", str(trained), "--policy", "region"]) == 0
    )
    assert "next to train (region policy)" in capsys.readouterr().out
    assert (
        main(["policy", "recommend", "--candidates", str(cand), "--trained", str(trained), "--score-col", "acc"]) == 2
    )
    assert "no score column 'acc'" in capsys.readouterr().err


def test_which_policies_apply_comes_from_the_registry():
    from lmms_ac.law.policies import POLICY_REGISTRY, UCB_WARMUP, recommendable_policies, simulable_policies

    priors = [n for n in POLICY_REGISTRY.snapshot() if POLICY_REGISTRY.get(n).uses_prior]
    assert priors == ["prior", "prior-check"]
    assert not set(priors) & set(simulable_policies(1))  # the prior learns from other benchmarks
    assert set(priors) <= set(simulable_policies(2))
    assert recommendable_policies(1) == ["region", "bayes-ucb", "rank-by-a"]
    assert recommendable_policies(UCB_WARMUP - 1) == ["region", "bayes-ucb", "greedy", "rank-by-a"]
    assert recommendable_policies(UCB_WARMUP) == ["region", "ucb", "bayes-ucb", "thompson", "greedy", "rank-by-a"]
    assert recommendable_policies(UCB_WARMUP, n_benchmarks=2)[-2:] == ["prior", "prior-check"]
    assert [n for n in POLICY_REGISTRY.snapshot() if POLICY_REGISTRY.get(n).baseline] == ["random"]
