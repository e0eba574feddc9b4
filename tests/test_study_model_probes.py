"""A model's `probes:` in a study file: true (every probe of the study), false (none) or a list of the study's probe
names; and a probe a tiled checkpoint (LLaVA-NeXT/OneVision) would refuse at load is caught by `study plan`.

The refusal follows a probe class's ``on_tiles``; the tests that need a refused probe make the token groups one
(``grid_only_tokgroup``: ``on_tiles = False``, as a plugin probe that does not say how it acts on the views, or the
token groups before they were defined per view), so they hold whatever the catalogue defines on tiles."""

from __future__ import annotations

import json

import pytest
import yaml

from lmms_ac.study.example import EXAMPLE
from lmms_ac.study.plan import make_plan
from lmms_ac.study.spec import StudyError, parse_study

VERSIONS = {"lmms-eval": "0.7.3", "lmms-ac": "0.1.0", "transformers": "4.0"}
PROBES = [
    {"perturbation": "patchshuffle4", "seeds": 2, "benchmarks": ["mme"]},
    {"perturbation": "tokgroup_m2_g0", "benchmarks": ["mme"]},
    {"tag": "mme_tokperm_5seeds"},
]


def _data(tmp_path, probes_of_b, pretrained_b=None):
    return {
        "name": "t",
        "output": "out",
        "models": [
            {"name": "a", "pretrained": str(tmp_path / "a")},
            {"name": "b", "pretrained": pretrained_b or str(tmp_path / "b"), "probes": probes_of_b},
        ],
        "benchmarks": ["mme", "seed"],
        "probes": PROBES,
    }


def _columns(plan, entry):
    return sorted({u.column for u in plan.units if u.entry == entry})


def _errors(data, tmp_path) -> str:
    with pytest.raises(StudyError) as err:
        make_plan(parse_study(data, tmp_path), VERSIONS)
    return str(err.value)


def test_true_false_and_a_list_select_the_probes(tmp_path):
    everything = ["mme", "mme/mme_tokperm_5seeds", "mme/patchshuffle4", "mme/tokgroup_m2_g0", "seed"]
    plan = make_plan(parse_study(_data(tmp_path, True), tmp_path), VERSIONS)
    assert _columns(plan, "a") == _columns(plan, "b") == everything  # true is the default
    plan = make_plan(parse_study(_data(tmp_path, False), tmp_path), VERSIONS)
    assert _columns(plan, "b") == ["mme", "seed"]
    plan = make_plan(parse_study(_data(tmp_path, ["patchshuffle4", "mme_tokperm_5seeds"]), tmp_path), VERSIONS)
    assert _columns(plan, "b") == ["mme", "mme/mme_tokperm_5seeds", "mme/patchshuffle4", "seed"]
    tasks = sorted(u.task for u in plan.units if u.entry == "b" and u.column == "mme/patchshuffle4")
    assert tasks == ["mme_patchshuffle4", "mme_patchshuffle4_s1"]  # the probe's own seeds: setting
    assert _columns(plan, "a") == everything  # the other model keeps every probe
    plan = make_plan(parse_study(_data(tmp_path, []), tmp_path), VERSIONS)
    assert _columns(plan, "b") == ["mme", "seed"]  # an empty list: none


def test_a_list_keeps_the_unit_ids_of_the_probes_it_runs(tmp_path):
    plan = make_plan(parse_study(_data(tmp_path, True), tmp_path), VERSIONS)
    every = {(u.column, u.task): u.unit_id for u in plan.units if u.entry == "b"}
    some = make_plan(parse_study(_data(tmp_path, ["patchshuffle4"]), tmp_path), VERSIONS).units
    assert all(every[(u.column, u.task)] == u.unit_id for u in some if u.entry == "b")  # nothing reruns


def test_a_probe_named_by_two_entries_runs_once(tmp_path):
    data = _data(tmp_path, ["tokperm"])
    data["probes"] = [{"perturbation": "tokperm", "seeds": 1, "benchmarks": ["mme"]}, {"tag": "mme_tokperm_5seeds"}]
    plan = make_plan(parse_study(data, tmp_path), VERSIONS)
    assert sorted(u.task for u in plan.units if u.entry == "b") == ["mme", "mme_tokperm", "seed"]
    data["models"][1]["probes"] = ["mme_tokperm_5seeds"]
    plan = make_plan(parse_study(data, tmp_path), VERSIONS)
    assert sorted(u.task for u in plan.units if u.entry == "b" and u.column != "mme" and u.column != "seed") == [
        "mme_tokperm",
        *(f"mme_tokperm_s{i}" for i in range(1, 5)),
    ]


def test_unknown_names_are_errors_naming_the_valid_ones(tmp_path):
    with pytest.raises(StudyError) as err:
        parse_study(_data(tmp_path, ["patchshufle4", "patchshuffle4", "patchshuffle4", "blur"]), tmp_path)
    msg = str(err.value)
    assert (
        "models[1].probes: 'patchshufle4' is not among the study's probes; did you mean 'patchshuffle4'? "
        "The study's probes (their perturbation: or tag:) are patchshuffle4, tokgroup_m2_g0, mme_tokperm_5seeds"
    ) in msg
    assert "models[1].probes: 'blur' is not among the study's probes. The study's probes" in msg
    assert "models[1].probes: 'patchshuffle4' is listed twice" in msg
    data = _data(tmp_path, ["patchshuffle4"])
    data["probes"] = []
    with pytest.raises(StudyError, match=r"models\[1\].probes: 'patchshuffle4' names a probe, but the study has none"):
        parse_study(data, tmp_path)


@pytest.mark.parametrize("value", ["patchshuffle4", 3, [1], {"patchshuffle4": True}])
def test_other_values_are_refused_with_the_three_forms(tmp_path, value):
    with pytest.raises(StudyError, match=r"models\[1\].probes: give true .*, false \(none\) or a list"):
        parse_study(_data(tmp_path, value), tmp_path)


def test_a_name_without_tasks_on_the_models_benchmarks_is_a_note(tmp_path):
    data = _data(tmp_path, ["patchshuffle4"])
    data["models"][1]["benchmarks"] = ["seed"]
    plan = make_plan(parse_study(data, tmp_path), VERSIONS)
    assert _columns(plan, "b") == ["seed"]
    assert "models[b].probes: 'patchshuffle4' selects no task on this model's benchmarks" in plan.notes


@pytest.fixture
def grid_only_tokgroup(monkeypatch):
    from lmms_ac.robustness.catalogue import PERTURBATIONS

    monkeypatch.setattr(PERTURBATIONS.get("tokgroup"), "on_tiles", False)


def _tiled(tmp_path, name="next", **config):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return str(folder)


@pytest.mark.parametrize(
    "config", [{"model_type": "llava_next"}, {"model_type": "llava_onevision"}, {"image_aspect_ratio": "anyres_max_9"}]
)
def test_a_tiled_checkpoint_with_a_refused_probe_is_caught_at_plan(tmp_path, config, grid_only_tokgroup):
    data = _data(tmp_path, True, pretrained_b=_tiled(tmp_path, **config))
    msg = _errors(data, tmp_path)
    assert "models[b].probes: tokgroup_m2_g0 would run on this model, but its checkpoint has tiled input" in msg
    assert "give it `probes: [patchshuffle4, mme_tokperm_5seeds]`" in msg  # the fix names the probes that run
    data["models"][1]["probes"] = ["patchshuffle4", "mme_tokperm_5seeds"]
    plan = make_plan(parse_study(data, tmp_path), VERSIONS)
    assert _columns(plan, "b") == ["mme", "mme/mme_tokperm_5seeds", "mme/patchshuffle4", "seed"]


def test_a_refused_perturbation_model_argument_on_a_tiled_checkpoint_is_caught(tmp_path, grid_only_tokgroup):
    data = _data(tmp_path, False, pretrained_b=_tiled(tmp_path, model_type="llava_next"))
    data["models"][1]["model_args"] = {"perturbation": "tokgroup_m2_g1"}
    msg = _errors(data, tmp_path)
    assert (
        "models[b].model_args.perturbation: tokgroup_m2_g1 (tokens stage) is refused: its checkpoint has tiled" in msg
    )
    data["models"][1]["model_args"] = {"perturbation": "tokperm"}  # defined on tiles: runs
    assert _columns(make_plan(parse_study(data, tmp_path), VERSIONS), "b") == ["mme", "seed"]


def test_plain_and_unreadable_checkpoints_are_not_tiled(tmp_path, grid_only_tokgroup):
    plain = _tiled(tmp_path, "plain", model_type="llava", image_aspect_ratio="pad")
    assert "mme/tokgroup_m2_g0" in _columns(
        make_plan(parse_study(_data(tmp_path, True, plain), tmp_path), VERSIONS), "b"
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")  # the loader reports it when the job runs
    assert "mme/tokgroup_m2_g0" in _columns(
        make_plan(parse_study(_data(tmp_path, True, str(broken)), tmp_path), VERSIONS), "b"
    )


def test_the_example_documents_the_list_form(tmp_path):
    line = "    # probes: [patchshuffle4]     # only these of the study's probes"
    assert line in EXAMPLE
    study = parse_study(
        yaml.safe_load(EXAMPLE.replace("# probes: [patchshuffle4]", "probes: [patchshuffle4]")), tmp_path
    )
    plan = make_plan(study, VERSIONS)
    assert "mme/patchshuffle4" in _columns(plan, "dinov2") and _columns(plan, "dinov2") == _columns(plan, "clip336")


def test_study_plan_refuses_before_any_job(tmp_path, capsys, grid_only_tokgroup):
    from lmms_ac.cli import main

    data = _data(tmp_path, True, pretrained_b=_tiled(tmp_path, model_type="llava_next"))
    (tmp_path / "a").mkdir()
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["study", "plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "models[b].probes: tokgroup_m2_g0 would run on this model" in err and "probes: [patchshuffle4" in err
    assert not (tmp_path / "out" / "jobs").exists()
    data["models"][1]["probes"] = ["patchshuffle4"]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["study", "plan", str(path)]) == 0
    assert "mme_patchshuffle4_s1" in capsys.readouterr().out


@pytest.mark.parametrize("grid_only", [False, True])
def test_the_plan_rule_is_the_models_rule_for_every_catalogue_entry(request, grid_only):
    """``study plan``'s refusal (torch-free) says what ``lmms_ac_llava``'s load-time check does on a tiled model,
    for every catalogue entry as it is, and with the token groups not defined on tiles."""
    if grid_only:
        request.getfixturevalue("grid_only_tokgroup")
    from types import SimpleNamespace

    from lmms_ac.perturb_bridge import HookFactory
    from lmms_ac.robustness.catalogue import PERTURBATIONS
    from lmms_ac.robustness.grammar import example_string, parse_perturbation
    from lmms_ac.study.plan import refused_on_tiles

    tiled = SimpleNamespace(image_aspect_ratio="anyres")
    checked = 0
    for name in PERTURBATIONS.names():
        p = parse_perturbation(example_string(PERTURBATIONS.get(name)))
        if p.stage not in ("image", "tokens"):
            continue
        hooks = HookFactory(tiled)
        try:
            hooks._check(p)
            refused = False
        except ValueError:
            refused = True
        assert refused == refused_on_tiles(p), name
        checked += 1
    assert checked >= 5 and (refused_on_tiles(parse_perturbation("tokgroup_m2_g0")) or not grid_only)
    assert not refused_on_tiles(parse_perturbation("patchshuffle4")) and not refused_on_tiles(
        parse_perturbation("tokperm")
    )
