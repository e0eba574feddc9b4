"""policy evaluate: protocols that hide what a user could not know, baselines under one crediting rule,
standard errors, the recommend default and the prior's A definition (issue 23)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmms_ac.law.data import BenchmarkData, load_example
from lmms_ac.law.evaluate import EVALUATED, evaluate, world_recall
from lmms_ac.law.policies import DEFAULT_POLICY, POLICY_REGISTRY
from lmms_ac.law.protocols import PROTOCOL_REGISTRY, protocol_names
from lmms_ac.law.recommend import recommend
from lmms_ac.law.worlds import (
    WorldOptions,
    family_best_hidden_worlds,
    family_of,
    family_worlds,
    permuted_worlds,
    synthetic_world,
    table_worlds,
)

SMALL = WorldOptions(worlds=3, k=9, sources=3)


def test_families_of_the_law_tables():
    fams = {s: family_of(s) for s in load_example()["mme"].settings}
    assert fams["CLIP336"] == fams["OpenCLIP"] == "clip" and fams["CLIP224+DINOv2"] == "combination"
    assert {fams[s] for s in ("SDim", "SD1.5", "SDXL", "DiT", "SD3", "SD2.1")} == {"diffusion"}
    assert fams["SigLIP"] == "siglip" and fams["DINOv2"] == "dinov2"
    assert family_of("siglip2-so400m") == "siglip"


def test_leave_family_out_hides_the_family_from_every_source():
    data = load_example()
    worlds = family_worlds(data, WorldOptions(), np.random.default_rng(0))
    assert len(worlds) == len(data) * 5  # 5 families in the table
    for w in worlds:
        assert w.k == 13  # the target keeps every candidate
        target = w.name.split(" without ")[0]
        assert target not in w.sources and len(w.sources) == len(data) - 1
        for src in w.sources.values():
            assert all(family_of(s) != w.group for s in src.settings), (w.name, src.settings)
    hidden = family_best_hidden_worlds(data, WorldOptions(), np.random.default_rng(0))
    assert len(hidden) == len(data)  # one per benchmark: the world that hides its best setting's family
    assert all(family_of(w.settings[w.best]) == w.group for w in hidden)


def test_permuted_control_shuffles_a_c_and_keeps_scores():
    data = load_example()
    base = table_worlds(data, SMALL, np.random.default_rng(0))
    perm = permuted_worlds(data, WorldOptions(worlds=16), np.random.default_rng(0))
    assert len(perm) == 16
    w0 = next(w for w in base if w.name == "mme")
    p0 = next(w for w in perm if w.name.startswith("mme"))
    np.testing.assert_array_equal(p0.y, w0.y)
    assert sorted(map(tuple, p0.points)) == sorted(map(tuple, w0.points))
    assert not np.array_equal(p0.points, w0.points)


@pytest.mark.parametrize("relation", ["equal", "related", "independent"])
def test_synthetic_worlds_sources_are_other_candidates(relation):
    rng = np.random.default_rng(0)
    for shape in ("uniform", "correlated", "clusters"):
        w = synthetic_world(shape, relation, rng, SMALL)
        assert w.k == 9 and len(w.sources) == 3 and w.points.min() == 0 and w.points.max() == 1
        for s in w.sources.values():
            assert not set(s.settings) & set(w.settings)


def test_synthetic_relations_order_the_source_target_agreement():
    """equal laws agree more with the sources than related ones, related more than independent."""
    from lmms_ac.law.prior import source_weights

    def agreement(rel):
        rng, cos = np.random.default_rng(1), []
        for _ in range(60):
            w = synthetic_world("uniform", rel, rng, WorldOptions(k=30, sources=2, noise=0.0))
            d = BenchmarkData("t", w.settings, w.points[:, 0], w.points[:, 1], w.y)
            a, b = source_weights(d)[1:], source_weights(w.sources["s0"])[1:]
            cos.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        return np.mean(cos)

    eq, rel, ind = agreement("equal"), agreement("related"), agreement("independent")
    assert eq > rel > ind and abs(ind) < 0.2


def test_random_law_is_chance_under_the_same_crediting_rule():
    """random-law: random order, credited like every policy (trained or in the law's top-n); it is far above
    the old 'best was trained' baseline, which is k'/k."""
    w = table_worlds(load_example(benchmarks=["mme"]), SMALL, np.random.default_rng(0))[0]
    old = world_recall(w, "random", 2000, 0)["final"][:, 1]
    new = world_recall(w, "random-law", 2000, 0)["final"][:, 1]
    assert old[3] == pytest.approx(4 / 13, abs=0.04)
    assert new[3] > old[3] + 0.2
    assert np.all(new >= old - 1e-12)


def test_evaluate_table_standard_errors_and_every_baseline():
    ev = evaluate(ev_data(), ["table", "synthetic-related"], runs=3, options=SMALL)
    t = ev.table()
    assert {"random-law", "rank-by-a", "greedy", "region"} <= set(t.policy)
    assert set(t.protocol) == {"table", "synthetic-related"}
    assert {"anytime@1", "anytime@3", "final@1", "final@3", "final@3 se"} <= set(t.columns)
    syn = t[t.protocol == "synthetic-related"]
    assert (syn.worlds == 9).all()  # 3 shapes x 3 worlds
    f = ev.frame
    one = f[(f.protocol == "table") & (f.policy == "region") & (f.metric == "final") & (f.top == 3)]
    assert list(one.budget) == list(range(1, 14))  # k' = 1..N
    assert (f.se >= 0).all() and ((f.recall >= 0) & (f.recall <= 1)).all()
    # the standard error is the spread over worlds / sqrt(worlds)
    per = [world_recall(w, "region", 3, 0)["final"][3, 1] for w in table_worlds(ev_data(), SMALL, None)]
    r, se = ev.at("table", "region")
    assert r == pytest.approx(np.mean(per)) and se == pytest.approx(np.std(per, ddof=1) / np.sqrt(len(per)))
    assert ev.goal()["greedy"]["meets_goal"] is None  # leave-family-out not evaluated: no verdict


def ev_data():
    return load_example(benchmarks=["mme", "ok_vqa", "seed_image"])


def test_permuted_control_drops_every_policy_towards_chance():
    data = ev_data()
    ev = evaluate(
        data, ["table", "permuted"], ["random-law", "region", "prior"], runs=5, options=WorldOptions(worlds=30)
    )
    for pol in ("region", "prior"):
        assert ev.at("permuted", pol)[0] < ev.at("table", pol)[0] - 0.2, pol
    assert ev.at("permuted", "prior")[0] <= ev.at("permuted", "random-law")[0] + 0.1


def test_protocols_and_policies_come_from_registries():
    assert protocol_names()[:2] == ["leave-family-out", "family-best-hidden"]
    assert {"synthetic-equal", "synthetic-related", "synthetic-independent", "permuted"} <= set(protocol_names())
    assert not PROTOCOL_REGISTRY.get("permuted").judged and not PROTOCOL_REGISTRY.get("table").judged
    assert all(p in POLICY_REGISTRY for p in EVALUATED)
    with pytest.raises(KeyError, match="did you mean 'permuted'"):
        evaluate(ev_data(), ["permutd"], runs=1, options=SMALL)
    with pytest.raises(ValueError, match="needs a table"):
        evaluate(None, ["permuted"], runs=1, options=SMALL)


def test_cli_evaluate_prints_the_table(capsys, tmp_path):
    from lmms_ac.cli import main

    argv = ["policy", "evaluate", "--example", "law-v1", "--benchmarks", "mme,ok_vqa,seed_image"]
    argv += ["--protocols", "leave-family-out,synthetic-related", "--worlds", "2", "--runs", "2"]
    assert main(argv + ["--out", str(tmp_path / "ev.csv")]) == 0
    text = capsys.readouterr().out
    assert "leave-family-out" in text and "random-law" in text and "±" in text and "Goal:" in text
    assert {"protocol", "policy", "metric", "top", "budget", "recall", "se"} <= set(pd.read_csv(tmp_path / "ev.csv"))
    assert main(argv + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["best_policy"] in POLICY_REGISTRY and doc["table"] and "provenance" in doc
    assert main(["policy", "evaluate", "--protocols", "synthetic-equal", "--worlds", "1"]) == 2
    assert "--worlds >= 2" in capsys.readouterr().err


def test_recommend_default_says_which_policy_why_and_expected_recall():
    d = load_example()["mme"]
    names = list(d.settings)
    trained = {n: float(v) for n, v in zip(names[:3], d.score[:3])}
    rec = recommend(names, d.A, d.C, trained, expected_worlds=4)
    assert rec.policy == DEFAULT_POLICY == "bayes-ucb"  # above region on every judged protocol (README)
    assert rec.next not in trained and "upper confidence bound" in rec.why
    assert set(rec.expected) >= {"bayes-ucb final_recall@3 k'=4", "region final_recall@3 k'=4", "worlds"}
    assert 0 <= rec.expected["region final_recall@3 k'=4"] <= 1
    first = recommend(names, d.A, d.C, {})
    assert first.next in names and "region sampling" in first.why  # nothing trained: one region draw
    for pol in ("greedy", "rank-by-a", "thompson", "ucb", "bayes-ucb"):
        r = recommend(names, d.A, d.C, trained, policy=pol)
        assert r.next not in trained and r.why, pol
    assert recommend(names, d.A, d.C, trained, policy="rank-by-a").next == max(
        (n for n in names if n not in trained), key=lambda n: d.A[names.index(n)]
    )


def _write_candidates(tmp_path, a_col="A"):
    d = load_example()["mme"]
    cand, trained = tmp_path / "ac.csv", tmp_path / "scores.csv"
    pd.DataFrame({"variant": d.settings, a_col: d.A, "C": d.C}).to_csv(cand, index=False)
    pd.DataFrame({"variant": d.settings[:4], "score": d.score[:4]}).to_csv(trained, index=False)
    return ["policy", "recommend", "--candidates", str(cand), "--trained", str(trained), "--expected-worlds", "0"]


def test_cli_prior_only_from_a_named_table_with_the_same_a(tmp_path, capsys):
    from lmms_ac.cli import main

    base = _write_candidates(tmp_path)
    assert main(base + ["--policy", "prior"]) == 2
    assert "needs a prior from a table you name" in capsys.readouterr().err
    assert main(base + ["--policy", "prior", "--prior", "law-v1"]) == 2
    err = capsys.readouterr().err
    assert "'A_embed'" in err and "'A'" in err and "another definition" in err
    assert main(base + ["--policy", "prior", "--prior", "law-v1", "--allow-a-mismatch"]) == 0
    out = capsys.readouterr()
    assert "WARNING" in out.err and "next to train (prior policy)" in out.out
    assert main(base + ["--prior", "law-v1"]) == 2  # region reads no prior
    assert "read only by the prior policies" in capsys.readouterr().err
    same = _write_candidates(tmp_path, a_col="A_embed_mme")
    same = same + ["--a-col", "A_embed_mme", "--policy", "prior-check", "--prior", "law-v1"]
    assert main(same) == 0
    assert "next to train (prior-check policy)" in capsys.readouterr().out


def _frame(values):
    """An evaluation frame with final Recall@3 at k'=4 per (protocol, policy)."""
    rows = [
        {"protocol": p, "policy": pol, "metric": "final", "top": 3, "budget": 4, "recall": r, "se": 0.0, "worlds": 2}
        for (p, pol), r in values.items()
    ]
    return pd.DataFrame(rows)


def test_the_default_is_region_unless_another_wins_every_judged_protocol():
    from lmms_ac.law.evaluate import Evaluation

    judged = ["leave-family-out", "family-best-hidden", "synthetic-related", "synthetic-independent"]
    base = {(p, "region"): 0.8 for p in judged + ["permuted"]}
    near = Evaluation(_frame({**base, **{(p, "greedy"): 0.9 for p in judged[:-1]}, (judged[-1], "greedy"): 0.7}))
    assert near.best_policy() == "region" and near.goal()["greedy"]["meets_goal"] is False
    win = Evaluation(_frame({**base, **{(p, "greedy"): 0.86 for p in judged}, ("permuted", "greedy"): 0.1}))
    assert win.best_policy() == "greedy"  # the permuted control is not judged
    assert win.goal()["greedy"]["meets_goal"] is True and win.goal()["region"]["meets_goal"] is False


def test_cli_evaluate_families_file_and_budget(capsys, tmp_path):
    from lmms_ac.cli import main

    settings = load_example()["mme"].settings
    fam = tmp_path / "fam.csv"
    pd.DataFrame({"variant": settings, "family": ["f1"] * 6 + ["f2"] * 7}).to_csv(fam, index=False)
    argv = ["policy", "evaluate", "--example", "law-v1", "--benchmarks", "mme,ok_vqa", "--protocols"]
    argv += ["leave-family-out", "--policies", "region,prior", "--runs", "2", "--families", str(fam)]
    assert main(argv + ["--budget", "6", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["worlds"] for r in doc["table"]} == {4}  # 2 benchmarks x 2 families
    assert main(argv + ["--budget", "6"]) == 0
    assert "Recall at k'=6" in capsys.readouterr().out
    assert main(argv + ["--budget", "40"]) == 2
    assert "no protocol has that many candidates" in capsys.readouterr().err
    pd.DataFrame({"variant": settings}).to_csv(fam, index=False)
    assert main(argv) == 2
    assert "no 'family' column" in capsys.readouterr().err


def test_bayes_ucb_reads_only_trained_scores_and_ranks_by_its_posterior():
    """Its order up to step t depends only on the scores of the first t trained settings."""
    from lmms_ac.law.simulation import PolicyContext, orders_bayes_ucb, predict_bayes

    d = load_example()["mme"]
    from lmms_ac.law.sampling import normalize_plane

    pts = normalize_plane(d.A, d.C)

    def order(y):
        return orders_bayes_ucb(PolicyContext("mme", pts, y, 4, np.random.default_rng(0)))

    base = order(d.score)
    rng = np.random.default_rng(1)
    for t in range(1, 13):
        for r in range(4):
            y = d.score.copy()
            y[base[r, t:]] = rng.normal(0, 1e4, 13 - t)  # scramble what run r has not trained by step t
            assert list(order(y)[r, : t + 1]) == list(base[r, : t + 1]), (r, t)
    ctx = PolicyContext("mme", pts, d.score, 1, np.random.default_rng(0))
    one = predict_bayes(ctx, np.array([[0]]))
    assert np.all(one == 0)  # one trained setting ranks nothing (ties count against the best)
    two = predict_bayes(ctx, np.array([[0, 5, 9]]))
    assert np.ptp(two) > 0


def test_cli_evaluate_on_a_user_wide_table(capsys, tmp_path):
    from lmms_ac.cli import main

    d = load_example()["mme"]
    wide = tmp_path / "wide.csv"
    pd.DataFrame({"setting": d.settings, "A": d.A, "C": d.C, "bench": d.score}).to_csv(wide, index=False)
    argv = ["policy", "evaluate", "--wide", str(wide), "--benchmarks", "bench", "--protocols", "leave-family-out"]
    assert main(argv + ["--policies", "region,bayes-ucb,prior", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "bayes-ucb" in out and "prior left out (a world has no source benchmark" in out
