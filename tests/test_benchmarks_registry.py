"""The ONE benchmark registry: the law paper's groups/names, and one register_benchmark call reaching
the robustness generator, collect's clean-score view and the law's groups."""

from __future__ import annotations

import pandas as pd
import pytest

from lmms_ac import benchmarks as B


@pytest.fixture
def registry():
    snap = B.BENCHMARKS.snapshot()
    yield B
    B.BENCHMARKS.restore(snap)


def test_law_views_are_the_papers():
    assert B.law_groups() == {
        "vision": ["mmbench_en", "mme", "ok_vqa", "seed_image"],
        "ocr": ["mmmu_val", "textvqa_val", "vizwiz_vqa_val", "scienceqa_img"],
    }
    assert B.law_benchmarks() == [
        "mmbench_en",
        "mme",
        "mmmu_val",
        "ok_vqa",
        "textvqa_val",
        "vizwiz_vqa_val",
        "scienceqa_img",
        "seed_image",
    ]
    assert B.sources("seed_image") == [("seedbench", "seed_image"), ("seed_image", "seed_image")]
    assert B.primary_metric("mme") == "mme_perception_score" and B.primary_metric("seedbench") == "seed_image"
    assert B.primary_metric("no_such_task") is None
    assert B.canonical_law_name("SEED-IMG") == "seed_image" and B.canonical_law_name("ok-vqa") == "ok_vqa"
    assert B.benchmark("mmbench_en_dev").key == "mmbench"


def test_one_entry_reaches_every_reader(registry):
    from lmms_ac.law.data import canonical_benchmark, group_members
    from lmms_ac.results.table import TABLE_COLUMNS, clean_scores, validate_table
    from lmms_ac.robustness import tasks as T

    B.register_benchmark(
        "realworld",
        "realworldqa",
        title="RealWorldQA",
        studies=["perception"],
        metric="exact_match",
        law_name="realworld_qa",
        sources=[("realworldqa", "exact_match")],
        aliases=["RealWorldQA", "RWQA"],
        group="vision",
    )
    assert "realworld_qa" in B.law_groups()["vision"]
    assert canonical_benchmark("RWQA") == "realworld_qa"
    assert group_members(["RealWorldQA"])["vision"] == ["RealWorldQA"]
    specs = T.task_specs(bases=["realworldqa"], families=[T.VARIANTS.get("tokperm")])
    assert [s.name for s in specs][:2] == ["realworldqa_tokperm", "realworldqa_tokperm_s1"]
    row = {c: "" for c in TABLE_COLUMNS}
    rows = [
        dict(row, variant="v", task="realworldqa", metric=m, value=x, config_hash="h")
        for m, x in (("exact_match", 0.5), ("other", 0.1))
    ]
    scores = clean_scores(validate_table(pd.DataFrame(rows)), ["realworld_qa"])
    assert scores.loc["v", "realworld_qa"] == 0.5  # the primary metric, found through the law name


def test_bad_entries_are_refused(registry):
    with pytest.raises(ValueError, match="no dots"):
        B.register_benchmark("bad", "bad.name")
    with pytest.raises(ValueError, match="group 'video'"):
        B.register_benchmark("vid", "vid", group="video")
    with pytest.raises(ValueError, match="already the benchmark 'mme'"):
        B.register_benchmark("mme2", "mme")
