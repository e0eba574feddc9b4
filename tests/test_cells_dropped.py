"""PatchDrop's fraction of cells actually removed travels model -> lmms-eval results -> tidy table ->
robustness table (METHODS §6: r by attention mass removes a varying number of cells)."""

from __future__ import annotations

import types
from pathlib import Path

import pandas as pd
import pytest

from lmms_ac import entry_point, plugin
from lmms_ac.perturb_bridge import DropTally
from lmms_ac.results.collect import rows_from_results
from lmms_ac.results.stamp import add_drop_metrics
from lmms_ac.results.robustness_table import robustness_table
from lmms_ac.results.table import validate_table


def _doc(task: str, value: float, perturbation: str = "", seed: int = 0) -> dict:
    args = "pretrained=/x/ckpt" + (f",perturbation={perturbation},perturbation_seed={seed}" if perturbation else "")
    return {
        "results": {task: {"mme_perception_score,none": value}},
        "configs": {task: {"metadata": [{"version": 0}]}},
        "config": {"model": "lmms_ac_llava", "model_args": args},
        "date": 1.0 + seed,
    }


def test_tally_becomes_a_metric_and_a_robustness_column():
    rows = rows_from_results(_doc("mme", 10.0), Path("/x/20260101_000000_results.json"))
    for seed, (total, n, value) in enumerate([(1.0, 4, 8.0), (3.0, 4, 6.0)], start=1):
        doc = _doc("mme", value, "pdrop_salient50", seed)
        add_drop_metrics(doc, {"mme": (total, n)})
        assert doc["results"]["mme"]["cells_dropped,none"] == pytest.approx(total / n)
        rows += rows_from_results(doc, Path(f"/x/2026010{seed}_000000_results.json"))
    table = validate_table(pd.DataFrame(rows))
    assert sorted(table.loc[table["metric"] == "cells_dropped", "value"]) == [0.25, 0.75]
    rt = robustness_table(table)
    (row,) = rt.itertuples(index=False)  # cells_dropped is a column of the drop's row, not a row of its own
    assert row.metric == "mme_perception_score" and row.n_seeds == 2
    assert row.cells_dropped == pytest.approx(0.5) and row.drop_mean == pytest.approx(3.0)


def test_clean_and_untallied_runs_leave_the_column_blank():
    rows = rows_from_results(_doc("mme", 10.0), Path("/x/20260101_000000_results.json"))
    rows += rows_from_results(_doc("mme", 9.0, "tokperm", 1), Path("/x/20260102_000000_results.json"))
    (row,) = robustness_table(validate_table(pd.DataFrame(rows))).itertuples(index=False)
    assert pd.isna(row.cells_dropped)


def test_evaluate_wrapper_adds_the_metric_for_our_model_only(monkeypatch):
    import lmms_eval.evaluator as evaluator

    def fake_evaluate(lm, task_dict=None, **kwargs):
        return {"results": {"mme": {"mme_perception_score,none": 1.0}, "seed": {"acc,none": 0.5}}}

    monkeypatch.setattr(evaluator, "evaluate", fake_evaluate)
    plugin._patch_evaluate_results(entry_point.hooks())
    assert evaluator.evaluate is not fake_evaluate
    tally = DropTally()
    tally.add("mme", "pdrop_random50", 0.5)
    tally.add("mme", "pdrop_random50", 0.25)
    ours = types.SimpleNamespace(hook_factory=types.SimpleNamespace(drops=tally))
    out = evaluator.evaluate(lm=ours, task_dict={})
    assert out["results"]["mme"]["cells_dropped,none"] == pytest.approx(0.375)
    assert "cells_dropped,none" not in out["results"]["seed"]
    other = evaluator.evaluate(types.SimpleNamespace(), {})  # another model: results untouched
    assert set(other["results"]["mme"]) == {"mme_perception_score,none"}


def test_model_argument_perturbation_is_stamped_as_task_metadata(monkeypatch):
    """collect reads the catalogue object's metadata from the results, not the model-argument string."""
    import lmms_eval.evaluator as evaluator

    from lmms_ac.robustness import parse_perturbation

    def fake_evaluate(lm, task_dict=None, **kwargs):
        return {
            "results": {
                "mme": {"mme_perception_score,none": 1.0},
                "mme_tokperm_s2": {"mme_perception_score,none": 2.0},
            },
            "configs": {
                "mme": {"metadata": [{"version": 0}]},
                "mme_tokperm_s2": {
                    "metadata": [
                        {"version": 0},
                        {"lmms_ac": {"perturbation": "tokperm", "seed": 2, "base_task": "mme"}},
                    ]
                },
            },
        }

    monkeypatch.setattr(evaluator, "evaluate", fake_evaluate)
    plugin._patch_evaluate_results(entry_point.hooks())
    ours = types.SimpleNamespace(
        hook_factory=types.SimpleNamespace(drops=DropTally(), default=parse_perturbation("pdrop_random30").with_seed(4))
    )
    out = evaluator.evaluate(lm=ours, task_dict={})
    doc = {**out, "config": {"model": "lmms_ac_llava", "model_args": "pretrained=/x/ckpt"}, "date": 1.0}
    rows = {r["task"]: r for r in rows_from_results(doc, Path("/x/20260101_000000_results.json"))}
    assert (rows["mme"]["perturbation"], rows["mme"]["severity"], rows["mme"]["seed"]) == ("pdrop_random30", "0.3", 4)
    assert (rows["mme_tokperm_s2"]["perturbation"], rows["mme_tokperm_s2"]["seed"]) == ("tokperm", 2)  # its own wins
