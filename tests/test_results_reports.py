"""leaderboard and robustness: pure functions of the tidy table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmms_ac.report.leaderboard import LEADERBOARD_COLUMNS, leaderboard, leaderboard_columns, to_markdown
from lmms_ac.results.robustness_table import AVERAGE_COLUMNS, ROBUSTNESS_COLUMNS, average_drop, robustness_table
from lmms_ac.results.table import TABLE_COLUMNS, clean_scores, validate_table


def _row(variant, task, metric, value, perturbation="none", seed=None, base=None, severity=""):
    return {
        "variant": variant,
        "task": task,
        "metric": metric,
        "value": value,
        "stderr": None,
        "n": 10,
        "perturbation": perturbation,
        "severity": severity,
        "seed": seed,
        "base_task": base or task,
        "lmms_eval_version": "x",
        "config_hash": "h",
        "time": "2025-01-01T00:00:00",
        "source": "f.json",
    }


@pytest.fixture()
def table() -> pd.DataFrame:
    rows = []
    clean = {
        "v1": (1500.0, 300.0, 0.50),
        "v2": (1200.0, 250.0, 0.30),
        "v3": (1400.0, 280.0, 0.45),
        "v4": (1000.0, 200.0, 0.20),
    }
    for v, (p, c, tv) in clean.items():
        rows += [
            _row(v, "mme", "mme_perception_score", p),
            _row(v, "mme", "mme_cognition_score", c),
            _row(v, "textvqa_val", "exact_match", tv),
        ]
    # token permutation on v1 and v2, 3 seeds; mme and textvqa
    for v, drop in (("v1", 100.0), ("v2", 50.0)):
        for s in (1, 2, 3):
            p, c, tv = clean[v]
            rows.append(
                _row(v, f"mme_perm_s{s}", "mme_perception_score", p - drop - s, "token_permutation", s, "mme", "1.0")
            )
            rows.append(_row(v, f"mme_perm_s{s}", "mme_cognition_score", c - 10, "token_permutation", s, "mme", "1.0"))
            rows.append(
                _row(v, f"textvqa_perm_s{s}", "exact_match", tv - 0.1, "token_permutation", s, "textvqa_val", "1.0")
            )
    return validate_table(pd.DataFrame(rows))


@pytest.fixture()
def ac() -> pd.DataFrame:
    return pd.DataFrame(
        {"A": [0.8, 0.4, 0.6, 0.2, 0.5], "C": [15.0, 10.0, 20.0, 5.0, 12.0]},
        index=pd.Index(["v1", "v2", "v3", "v4", "v5"], name="variant"),
    )


def test_clean_scores_primary_metric(table):
    s = clean_scores(table)
    assert list(s.columns) == ["mme", "textvqa_val"]
    assert s.loc["v1", "mme"] == 1500.0  # the perception score is MME's primary metric
    assert clean_scores(table, metrics={"mme": "mme_cognition_score"}).loc["v1", "mme"] == 300.0
    with pytest.raises(KeyError, match="did you mean 'mme'"):
        clean_scores(table, ["mmee"])


def test_robustness_table(table):
    d = robustness_table(table)
    assert list(d.columns) == ROBUSTNESS_COLUMNS
    r = d[(d.variant == "v1") & (d.base_task == "mme") & (d.metric == "mme_perception_score")].iloc[0]
    assert r.clean == 1500.0 and r.n_seeds == 3
    assert r.drop_mean == pytest.approx(102.0) and r.drop_std == pytest.approx(1.0)
    assert r.perturbed_mean == pytest.approx(1398.0)
    assert r.drop_pct_mean == pytest.approx(102.0 / 20.0)  # MME perception on the 0-100 scale
    t = d[(d.variant == "v2") & (d.base_task == "textvqa_val")].iloc[0]
    assert t.drop_mean == pytest.approx(0.1) and t.drop_pct_mean == pytest.approx(10.0)
    avg = average_drop(d)
    assert list(avg.columns) == AVERAGE_COLUMNS
    a1 = avg[avg.variant == "v1"].iloc[0]
    assert a1.n_benchmarks == 2 and a1.avg_drop_pct == pytest.approx((102.0 / 20.0 + 10.0) / 2)


def test_robustness_needs_perturbed_rows(table):
    with pytest.raises(ValueError, match="no perturbed runs"):
        robustness_table(table[table.perturbation == "none"])


def test_leaderboard_schema_and_values(table, ac):
    b = leaderboard(table, ac)
    assert list(b.columns) == leaderboard_columns(["mme", "textvqa_val"], ["token_permutation"])
    assert list(b.columns)[:3] == LEADERBOARD_COLUMNS[:3]
    assert list(b.variant[:4]) == ["v1", "v3", "v2", "v4"] and list(b["rank"][:4]) == [1, 2, 3, 4]
    v1 = b.set_index("variant").loc["v1"]
    assert v1.average == pytest.approx((1500 / 20 + 50.0) / 2)
    assert v1.drop_token_permutation == pytest.approx((102.0 / 20.0 + 10.0) / 2)
    # v5 has A/C but no scores: predicted by the law, no rank
    v5 = b.set_index("variant").loc["v5"]
    assert np.isfinite(v5.pred_mme) and pd.isna(v5["rank"]) and pd.isna(v5.mme)
    assert np.isnan(b.set_index("variant").loc["v3", "drop_token_permutation"])


def test_leaderboard_columns_do_not_follow_the_table_row_order(table, ac):
    """The tidy table's rows follow the results files' names (hashes in a study); the columns must not."""
    first = leaderboard(table, ac)
    shuffled = leaderboard(table.sort_values("task", ascending=False, kind="stable"), ac)
    assert list(shuffled.columns) == list(first.columns)
    benches = [c[len("pred_") :] for c in first.columns if c.startswith("pred_")]
    assert benches == sorted(benches) and len(benches) > 1


def test_leaderboard_without_ac_and_markdown(table):
    b = leaderboard(table[table.perturbation == "none"])
    assert list(b.columns) == [
        "variant",
        "A",
        "C",
        "pred_mme",
        "pred_textvqa_val",
        "mme",
        "textvqa_val",
        "average",
        "n_benchmarks",
        "rank",
    ]
    md = to_markdown(b)
    assert md.splitlines()[0].startswith("| variant | A | C |") and "| v1 |" in md


def test_table_validation():
    with pytest.raises(ValueError, match="missing column"):
        validate_table(pd.DataFrame({"variant": ["a"]}))
    assert list(validate_table(pd.DataFrame({c: [] for c in TABLE_COLUMNS})).columns) == TABLE_COLUMNS


def test_cli_leaderboard_and_robustness(table, ac, tmp_path, capsys):
    from lmms_ac.cli import main

    tpath = tmp_path / "table.csv"
    table.to_csv(tpath, index=False)
    acpath = tmp_path / "ac.csv"
    ac.reset_index().rename(columns={"A": "A_ll"}).to_csv(acpath, index=False)
    out = tmp_path / "board.csv"
    assert main(["leaderboard", str(tpath), "--scores", str(acpath), "--a-col", "A_ll", "--out", str(out)]) == 0
    board = pd.read_csv(out)
    assert board.variant.iloc[0] == "v1" and "drop_token_permutation" in board.columns
    assert main(["leaderboard", str(tpath), "--scores", str(acpath), "--a-col", "A_ll", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err
    assert (
        main(["leaderboard", str(tpath), "--scores", str(acpath), "--a-col", "A_l", "--out", str(tmp_path / "b2.csv")])
        == 2
    )
    err = capsys.readouterr().err
    assert "no A column 'A_l'" in err and "did you mean 'A_ll'" in err and "--a-col" in err
    assert main(["leaderboard", str(tpath), "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("| variant |")
    assert main(["leaderboard", str(tpath), "--benchmarks", "textvqa"]) == 2
    assert "did you mean 'textvqa_val'" in capsys.readouterr().err
    assert (
        main(["robustness", str(tpath), "--out", str(tmp_path / "rob.csv"), "--summary-out", str(tmp_path / "avg.csv")])
        == 0
    )
    assert list(pd.read_csv(tmp_path / "rob.csv").columns) == ROBUSTNESS_COLUMNS
    assert list(pd.read_csv(tmp_path / "avg.csv").columns) == AVERAGE_COLUMNS
    assert main(["robustness", str(tpath), "--format", "md"]) == 0
    assert "Average drop across benchmarks" in capsys.readouterr().out
    assert main(["robustness", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_patch_information_loss_map_from_the_table(tmp_path):
    """plot pil --table turns the collected tokgroup runs into the M x M map and its heat map."""
    from lmms_ac.cli import main
    from lmms_ac.report.probe_maps import probe_map

    rows = [{"variant": "v", "task": "mme", "metric": "acc", "value": 80.0, "perturbation": "none", "base_task": "mme"}]
    for g, score in enumerate([80.0, 60.0, 40.0, 20.0]):
        rows.append(
            {
                "variant": "v",
                "task": f"mme_tokgroup_m2_g{g}",
                "metric": "acc",
                "value": score,
                "perturbation": f"tokgroup_m2_g{g}",
                "base_task": "mme",
            }
        )
    table = pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS).assign(config_hash="h")
    arr = probe_map(table, "mme", 2, "acc")
    assert np.allclose(arr, [[0.0, 0.25], [0.5, 0.75]])
    with pytest.raises(ValueError, match="missing probe results"):
        probe_map(table, "mme", 4, "acc")
    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    assert (
        main(
            [
                "plot",
                "pil",
                "--table",
                str(path),
                "--benchmark",
                "mme",
                "--m",
                "2",
                "--metric",
                "acc",
                "--out",
                str(tmp_path / "pil"),
                "--formats",
                "png",
            ]
        )
        == 0
    )
    assert (tmp_path / "pil.png").is_file()
    assert main(["plot", "pil", "--out", str(tmp_path / "x")]) == 2
