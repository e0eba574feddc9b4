"""Study files: validation messages, the commented example, stable ids, re-planning, dry runs."""

from __future__ import annotations

import copy

import pytest
import yaml

from lmms_ac.study.example import EXAMPLE
from lmms_ac.study.plan import make_plan
from lmms_ac.study.spec import StudyError, parse_study

VERSIONS = {"lmms-eval": "0.7.3", "lmms-ac": "0.1.0", "transformers": "4.0"}


def _base(tmp_path):
    return {
        "name": "t",
        "output": "out",
        "models": [
            {"name": "a", "pretrained": str(tmp_path / "a"), "stage1": str(tmp_path / "a"), "vision": "clip:x"},
            {"name": "b", "pretrained": str(tmp_path / "b"), "model_args": {"dtype": "float32"}},
        ],
        "benchmarks": ["mme", "seed"],
        "scores": {"A": {"captions": "c.json", "images": "img"}, "C_ocr": {"n": 4}},
    }


def _errors(data, tmp_path) -> str:
    with pytest.raises(StudyError) as err:
        parse_study(data, tmp_path)
    return str(err.value)


def test_example_is_valid_and_plans(tmp_path):
    study = parse_study(yaml.safe_load(EXAMPLE), tmp_path)
    plan = make_plan(study, VERSIONS)
    cols = {u.column for u in plan.units}
    assert {"mme", "seed", "mme/patchshuffle4", "A", "C", "C_ocr"} <= cols
    probe = [u for u in plan.units if u.column == "mme/patchshuffle4" and u.entry == "clip336"]
    assert sorted(u.task for u in probe) == ["mme_patchshuffle4"] + [f"mme_patchshuffle4_s{i}" for i in range(1, 5)]
    assert [u.entry for u in plan.units if u.entry == "siglip"] == ["siglip", "siglip"]  # C and C_ocr only


def test_unknown_key_names_path_and_suggests(tmp_path):
    data = _base(tmp_path)
    data["models"][1]["pretrainde"] = data["models"][1].pop("pretrained")
    data["executor"] = {"type": "slurn", "max_attempts": 0}
    msg = _errors(data, tmp_path)
    assert "models[1].pretrainde: unknown key; did you mean 'pretrained'?" in msg
    assert "models[1].pretrained: required key is missing" in msg
    assert "executor.type: 'slurn' is not allowed; use one of 'local' or 'slurm'" in msg
    assert "executor.max_attempts" in msg


def test_cross_key_rules(tmp_path):
    data = _base(tmp_path)
    data["models"][1]["name"] = "a"
    data["probes"] = [{"perturbation": "tokperm", "benchmarks": ["mmee"]}, {"perturbation": "x", "tag": "y"}]
    data["models"][0]["model_args"] = {"variant": "z"}
    msg = _errors(data, tmp_path)
    assert "the name 'a' is used twice" in msg
    assert "probes[0].benchmarks: 'mmee' is not among the study's benchmarks; did you mean 'mme'" in msg
    assert "probes[1]: give exactly one of `perturbation:`" in msg
    assert "models[0].model_args.variant: set it as the model's own key `variant:`" in msg
    data = _base(tmp_path)
    del data["models"][0]["stage1"]
    assert "scores.A: no model or candidate has `stage1:`" in _errors(data, tmp_path)
    assert "must be a YAML mapping" in _errors(["a"], tmp_path)


def test_unknown_perturbation_suggests(tmp_path):
    data = _base(tmp_path)
    data["probes"] = [{"perturbation": "patchshufle4"}]
    with pytest.raises(
        StudyError, match=r"probes\[0\].perturbation: unknown 'patchshufle4'; did you mean 'patchshuffle4'"
    ):
        make_plan(parse_study(data, tmp_path), VERSIONS)


def test_ids_are_stable_and_replanning_is_local(tmp_path):
    data = _base(tmp_path)
    plan1 = make_plan(parse_study(data, tmp_path), VERSIONS)
    plan2 = make_plan(parse_study(copy.deepcopy(data), tmp_path), VERSIONS)
    assert [u.unit_id for u in plan1.units] == [u.unit_id for u in plan2.units]
    ids = {(u.entry, u.column): u.unit_id for u in plan1.units}
    # change model b's arguments: only b's ids change
    data["models"][1]["model_args"] = {"dtype": "bfloat16"}
    changed = {(u.entry, u.column): u.unit_id for u in make_plan(parse_study(data, tmp_path), VERSIONS).units}
    assert {k for k in ids if ids[k] != changed[k]} == {("b", "mme"), ("b", "seed")}
    # a new benchmark adds units and changes none; a new lmms-eval version changes every eval unit
    data["benchmarks"].append("mmmu_val")
    more = {(u.entry, u.column): u.unit_id for u in make_plan(parse_study(data, tmp_path), VERSIONS).units}
    assert {k: v for k, v in more.items() if k in changed} == changed and ("a", "mmmu_val") in more
    newer = make_plan(parse_study(data, tmp_path), {**VERSIONS, "lmms-eval": "0.7.4"}).units
    assert all(u.unit_id != more[(u.entry, u.column)] for u in newer if u.kind == "eval")
    assert all(u.unit_id == more[(u.entry, u.column)] for u in newer if u.kind == "score")  # scores skip lmms-eval


def test_one_job_per_model_and_dry_run(tmp_path):
    from lmms_ac.study.runner import dry_run, prepare

    data = _base(tmp_path)
    data["executor"] = {
        "type": "slurm",
        "slurm": {
            "partition": "gpu",
            "account": "lab",
            "time": 30,
            "gpus_per_job": 2,
            "constraint": "a100",
            "array_parallelism": 3,
        },
    }
    study = parse_study(data, tmp_path)
    prep = prepare(study, VERSIONS)
    kinds = sorted((j.kind, j.entry, len(j.units)) for j in prep.jobs)
    assert kinds == [("eval", "a", 2), ("eval", "b", 2), ("score-a", "a", 1), ("score-c", "a", 1)]
    written = dry_run(prep)
    text = written[0].read_text()
    ev = next(j for j in prep.jobs if j.kind == "eval" and j.entry == "b")
    assert "--tasks mme,seed" in text and f"jobs/{ev.job_id}/lmms_eval" in text
    assert f"pretrained={tmp_path / 'b'},dtype=float32,variant=b" in text
    pytest.importorskip("submitit")
    sbatch = written[1].read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=30",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --constraint=a100",
        "#SBATCH --array=0-3%3",
    ):
        assert line in sbatch, line
    assert not (study.output_dir / "jobs").exists()  # a dry run prepares nothing that could look started


def test_accelerate_and_gpu_settings_shape_the_command(tmp_path):
    from lmms_ac.study.runner import prepare

    data = _base(tmp_path)
    data["scores"] = {}
    data["executor"] = {"gpus": [0, 1, 2, 3], "gpus_per_job": 2, "accelerate": True}
    prep = prepare(parse_study(data, tmp_path), VERSIONS)
    argv = prep.jobs[0].argv
    assert argv[1:6] == ["launch", "--num_processes", "2", "-m", "lmms_eval"] and prep.jobs[0].gpus == 2
    data["executor"] = {"gpus": "none", "accelerate": True}
    with pytest.raises(StudyError, match="executor.accelerate: needs GPUs"):
        parse_study(data, tmp_path)


def test_cli_init_then_plan(tmp_path, capsys):
    from lmms_ac.cli import main

    path = tmp_path / "study.yaml"
    assert main(["study", "init", str(path)]) == 0
    assert main(["study", "init", str(path)]) == 2  # never replaced silently
    assert main(["study", "plan", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "22 unit(s): 0 done, 22 pending in 7 job(s)" in out and "estimated cost" in out
    assert "clip336.pretrained 'ckpts/llava-clip336' is not a folder next to the study file: loaded as a hub id" in out
    assert (tmp_path / "runs" / "law-study" / "dry-run" / "commands.sh").exists()
