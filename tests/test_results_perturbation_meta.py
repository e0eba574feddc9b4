"""A perturbation given as a model argument and the same one as a generated task land in one
(perturbation, severity) group of the tidy table and of the robustness table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmms_ac.results.collect import rows_from_results


def _task_doc(task: str, meta: dict, value: float) -> dict:
    return {
        "results": {task: {"mme_perception_score,none": value}},
        "configs": {task: {"metadata": [{"version": 0}, {"lmms_ac": meta}]}},
        "config": {"model": "lmms_ac_llava", "model_args": "pretrained=/x/ckpt"},
        "date": 1.0,
    }


def _arg_doc(perturbation: str, value: float, seed: int = 0) -> dict:
    return {
        "results": {"mme": {"mme_perception_score,none": value}},
        "configs": {"mme": {"metadata": [{"version": 0}]}},
        "config": {
            "model": "lmms_ac_llava",
            "model_args": f"pretrained=/x/ckpt,perturbation={perturbation},perturbation_seed={seed}",
        },
        "date": 2.0,
    }


@pytest.mark.parametrize("form", ["pdrop_salient30", "pdrop_nonsalient70_count", "pdrop_random50", "patchshuffle4"])
def test_same_group_from_model_argument_and_task(form):
    from lmms_ac.robustness import parse_perturbation
    from lmms_ac.robustness.tasks import TaskSpec, task_metadata

    p = parse_perturbation(form)
    spec = TaskSpec(f"mme_{form}", "mme", "mme", p, p.name, 1, ())
    meta = json.loads(json.dumps(task_metadata(spec)))  # as the results JSON stores it
    (t_row,) = rows_from_results(_task_doc(f"mme_{form}", meta, 10.0), Path("/x/20260101_000000_results.json"))
    (a_row,) = rows_from_results(_arg_doc(form, 11.0), Path("/y/20260101_000001_results.json"))
    keys = ("variant", "base_task", "metric", "perturbation", "severity", "seed")
    assert {k: t_row[k] for k in keys} == {k: a_row[k] for k in keys}
    assert a_row["severity"] != ""  # the model-argument route used to drop it
    assert float(a_row["severity"]) == pytest.approx(p.ratio if hasattr(p, "ratio") else p.n)


def test_patchdrop_severity_is_the_fraction_removed_with_its_unit():
    from lmms_ac.robustness import parse_perturbation
    from lmms_ac.robustness.grammar import perturbation_metadata

    sal = perturbation_metadata(parse_perturbation("pdrop_salient30"), "mme")
    non = perturbation_metadata(parse_perturbation("pdrop_nonsalient30"), "mme")
    cnt = perturbation_metadata(parse_perturbation("pdrop_nonsalient30_count"), "mme")
    assert sal["severity"] == non["severity"] == cnt["severity"] == 0.3
    assert sal["severity_unit"] == non["severity_unit"] == "fraction of attention mass removed"
    assert cnt["severity_unit"] == "fraction of cells removed"
    assert perturbation_metadata(parse_perturbation("tokperm"), "mme", seed=3)["form"] == "tokperm_s3"


def test_robustness_table_groups_both_routes():
    import pandas as pd

    from lmms_ac.results.robustness_table import robustness_table
    from lmms_ac.results.table import validate_table

    rows = []
    for seed, (route, doc) in enumerate(
        [("arg", _arg_doc("pdrop_random50", 8.0, 1)), ("arg", _arg_doc("pdrop_random50", 6.0, 2))]
    ):
        rows += rows_from_results(doc, Path(f"/x/2026010{seed}_000000_results.json"))
    clean = {
        "results": {"mme": {"mme_perception_score,none": 10.0}},
        "configs": {"mme": {}},
        "config": {"model": "lmms_ac_llava", "model_args": "pretrained=/x/ckpt"},
        "date": 0.5,
    }
    rows += rows_from_results(clean, Path("/x/20250101_000000_results.json"))
    table = validate_table(pd.DataFrame(rows))
    rt = robustness_table(table)
    (row,) = rt.itertuples(index=False)
    assert row.severity == "0.5" and row.n_seeds == 2 and row.drop_mean == pytest.approx(3.0)
    assert row.severity_unit == "fraction of cells removed"


def test_light_severity_unit_agrees_with_the_catalogue():
    from lmms_ac.results.robustness_table import severity_unit
    from lmms_ac.robustness.catalogue import PERTURBATIONS
    from lmms_ac.robustness.grammar import perturbation_metadata

    for name in PERTURBATIONS.names():
        cls = PERTURBATIONS.get(name)
        for ex in cls.examples:
            meta = perturbation_metadata(cls(**ex), "mme")
            assert severity_unit(meta["perturbation"]) == (meta["severity_unit"] or ""), meta["perturbation"]
