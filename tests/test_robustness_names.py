"""Task name -> perturbation comes from the generated index when this process built one: a user task
that took a generated name is clean; names nobody indexed fall back to reading the name. And the
index adapter of lmms_ac.plugin: ours added, user tasks kept, tags of our tasks only."""

from __future__ import annotations

import types

import pytest

from lmms_ac.plugin import TaskManagerIndex


@pytest.fixture
def fresh_names(monkeypatch):
    from lmms_ac.robustness import index, names

    fresh = names.TaskNames()
    monkeypatch.setattr(names, "TASK_NAMES", fresh)
    monkeypatch.setattr(index, "TASK_NAMES", fresh)
    return names


def test_index_decides_and_a_user_task_wins(fresh_names, base_yaml, tmp_path, monkeypatch):
    from lmms_ac.robustness import tasks as T

    monkeypatch.setenv("LMMS_AC_CACHE", str(tmp_path / "cache"))
    user_yaml = str(tmp_path / "user" / "mme_tokperm.yaml")
    tm = types.SimpleNamespace(
        _task_index={
            "mme": {"type": "task", "yaml_path": base_yaml},
            "mme_tokperm": {"type": "task", "yaml_path": user_yaml},
            "lmms_ac_tokperm": {"type": "group", "yaml_path": user_yaml},
        }
    )
    assert fresh_names.perturbation_for_task("mme_tokperm").to_string() == "tokperm"  # no index yet: the name
    info = T.extend_index(TaskManagerIndex(tm), families=[T.VARIANTS.get("tokperm")])
    assert info.tasks == 4  # seeds 1-4; seed 0's name belongs to the user task
    assert tm._task_index["mme_tokperm"]["yaml_path"] == user_yaml
    assert (
        fresh_names.perturbation_for_task("mme_tokperm") is None
        and fresh_names.base_task("mme_tokperm") == "mme_tokperm"
    )
    assert fresh_names.perturbation_for_task("mme_tokperm_s2").to_string() == "tokperm_s2"
    assert tm._task_index["mme_tokperm_5seeds"]["task"] == [f"mme_tokperm_s{k}" for k in range(1, 5)]
    assert tm._task_index["lmms_ac_tokperm"]["type"] == "group"  # an lmms-eval group keeps its name
    assert "mme_tokperm_s3" in tm._all_subtasks and "mme_tokperm_5seeds" in tm._all_tags
    again = T.extend_index(TaskManagerIndex(tm), families=[T.VARIANTS.get("tokperm")])
    assert again.tasks == 0 and fresh_names.perturbation_for_task("mme_tokperm_s2").to_string() == "tokperm_s2"


def test_a_registry_change_drops_cached_lookups(fresh_names):
    from lmms_ac.benchmarks import BENCHMARKS, register_benchmark

    assert fresh_names.perturbation_for_task("newbench_tokperm") is None
    snap = BENCHMARKS.snapshot()
    try:
        register_benchmark("newbench")
        assert fresh_names.perturbation_for_task("newbench_tokperm").to_string() == "tokperm"
    finally:
        BENCHMARKS.restore(snap)
    assert fresh_names.perturbation_for_task("newbench_tokperm") is None
