"""Issue 20, part A: strings that reach another program are checked, not joined blindly.

A study's ``variant`` or a checkpoint folder holding ``,trust_remote_code=on`` once became a second model
argument of lmms-eval (and the checkpoint's ``auto_map`` module ran); ``commands.sh`` must not run a study's
``env`` values; the done file records what lmms-eval saw."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lmms_ac.study.plan import lmms_eval_model_args, make_jobs, make_plan, shell_comment, shell_line
from lmms_ac.study.spec import StudyError, parse_study

VERSIONS = {"lmms-eval": "0.7.3", "lmms-ac": "0.1.0", "transformers": "4.0"}
INJECTED = "x,trust_remote_code=on"

EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("executed")
from transformers import PreTrainedTokenizerFast


class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""


@pytest.fixture()
def remote_code_checkpoint(original_dirs, tmp_path, monkeypatch):
    """The tiny original checkpoint with an ``auto_map`` tokenizer module that writes a marker when imported."""
    import transformers.dynamic_module_utils as dmu

    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))  # keep the user's cache clean
    ckpt = tmp_path / "llava-remote-code"
    shutil.copytree(original_dirs["full"]["checkpoint"], ckpt)
    marker = tmp_path / "remote_code_ran"
    (ckpt / "evil_tokenizer.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    config_path = ckpt / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "evil_tokenizer.EvilTokenizer"]}
    config_path.write_text(json.dumps(config))
    return ckpt, marker


def _study(tmp_path: Path, **model) -> dict:
    return {"name": "t", "output": "out", "models": [{"name": "m", **model}], "benchmarks": ["mme"]}


def _plan_error(data: dict, tmp_path: Path) -> str:
    with pytest.raises(StudyError) as err:
        make_plan(parse_study(data, tmp_path), VERSIONS)
    return str(err.value)


def test_a_study_cannot_turn_on_remote_code(remote_code_checkpoint, tmp_path, capsys):
    from lmms_eval.utils import simple_parse_args_string

    from lmms_ac.cli import main
    from lmms_ac.models.lmms_ac_llava import LmmsAcLlava

    ckpt, marker = remote_code_checkpoint
    # the variant: refused at plan time, by `lmms-ac study plan` with one line naming the key
    data = _study(tmp_path, pretrained=str(ckpt), variant=INJECTED, model_args={"device": "cpu"})
    assert "models[m].variant: 'x,trust_remote_code=on' contains ',' and '='" in _plan_error(data, tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["study", "plan", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after loguru's copy of the same line
    assert err.startswith("lmms-ac study: error: models[m].variant:")
    assert not (tmp_path / "out").exists()
    # a checkpoint folder named like an argument, and a model_args key smuggling one in
    sneaky = tmp_path / INJECTED
    sneaky.symlink_to(ckpt)
    msg = _plan_error(_study(tmp_path, pretrained=str(sneaky)), tmp_path)
    assert f"models[m].pretrained: '{sneaky}' contains ',' and '='" in msg and "ln -s" in msg
    msg = _plan_error(
        _study(tmp_path, pretrained=str(ckpt), model_args={"device": "cpu,trust_remote_code=on"}), tmp_path
    )
    assert "models[m].model_args.device:" in msg
    msg = _plan_error(_study(tmp_path, pretrained=str(ckpt), model_args={"a,trust_remote_code": "on"}), tmp_path)
    assert "is not a model argument name" in msg
    # quotes and brackets change how lmms-eval groups the arguments: refused too
    for bad in ("it's", 'a"b', "{x}", "a[0]", "two\nlines", " padded", "-x"):
        assert "models[m].variant:" in _plan_error(_study(tmp_path, pretrained=str(ckpt), variant=bad), tmp_path)
    data = _study(tmp_path, pretrained=str(ckpt))
    data["candidates"] = [{"name": "c", "vision": "clip:x", "variant": "--force"}]
    assert "candidates[c].variant: '--force' starts with '-'" in _plan_error(data, tmp_path)
    assert not marker.exists()

    # an accepted study: lmms-eval's own parser reads back exactly the arguments the plan (and so the done file) holds
    study = parse_study(
        _study(tmp_path, pretrained=str(ckpt), variant="tiny v1", model_args={"device": "cpu"}), tmp_path
    )
    plan = make_plan(study, VERSIONS)
    job = make_jobs(plan, plan.units, tmp_path / "jobs")[0]
    seen = job.argv[job.argv.index("--model_args") + 1]
    parsed = simple_parse_args_string(seen)
    assert parsed == {"pretrained": str(ckpt), "device": "cpu", "variant": "tiny v1"}
    assert parsed["variant"] == plan.units[0].variant == "tiny v1"
    assert dict(lmms_eval_model_args(study, study.models[0])) == parsed
    lm = LmmsAcLlava.create_from_arg_string(seen, {"batch_size": 1})
    assert lm.tokenizer is not None and not marker.exists()

    # the hole this closes: the string the plan used to join gives lmms-eval a trust_remote_code argument,
    # and the model then runs the checkpoint's code (so the assertions above can fail)
    joined = f"pretrained={ckpt},device=cpu,variant={INJECTED}"
    assert simple_parse_args_string(joined)["trust_remote_code"] == "on"
    LmmsAcLlava.create_from_arg_string(joined.replace(",variant=x", ""), {"batch_size": 1})
    assert marker.read_text() == "executed"


def test_commands_sh_runs_no_study_value(tmp_path, monkeypatch):
    from lmms_ac.study.runner import dry_run, prepare

    monkeypatch.setattr("lmms_ac.study.plan.bin_path", lambda name: "true")  # the script runs, lmms-eval does not
    marker = tmp_path / "pwned"
    (tmp_path / "ckpt").mkdir()
    data = _study(tmp_path, pretrained=str(tmp_path / "ckpt"), variant=f"v $(touch {marker})")
    data["env"] = {"HF_HOME": f"/tmp/a; touch {marker}", "QUOTE": f"it's `touch {marker}` $HOME"}
    data["output"] = f"out dir;touch {marker}"
    study = parse_study(data, tmp_path)
    script = dry_run(prepare(study, VERSIONS))[0]
    text = script.read_text()
    line = next(x for x in text.splitlines() if x.startswith("HF_HOME="))
    assert shlex.split(line)[:2] == [f"HF_HOME=/tmp/a; touch {marker}", f"QUOTE=it's `touch {marker}` $HOME"]
    # bash runs the whole script: it enters the output folder and runs the (stand-in) command, and nothing else
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


def test_shell_line_quotes_every_word_and_refuses_bad_env_names():
    assert shell_line(["a b", "x;y", "ok"], {"E": "1;2"}) == "E='1;2' 'a b' 'x;y' ok"
    with pytest.raises(StudyError, match="not an environment variable name"):
        shell_line(["x"], {"A;B": "1"})
    data = {"name": "t", "models": [{"name": "m", "pretrained": "org/x"}], "benchmarks": ["mme"], "env": {"A B": "1"}}
    with pytest.raises(StudyError, match="env: 'A B' is not an environment variable name"):
        parse_study(data, ".")
    data = {"name": "t", "models": [{"name": "m", "pretrained": "org/x"}], "benchmarks": ["mme,pope"]}
    with pytest.raises(StudyError, match="'mme,pope' is not an lmms-eval task name"):
        parse_study(data, ".")
    # what becomes an #SBATCH line (or the job name in one) stays on one line
    data = {"name": "t\nrm -rf ~", "models": [{"name": "m", "pretrained": "org/x"}], "benchmarks": ["mme"]}
    data["executor"] = {"slurm": {"partition": "gpu\n#SBATCH --x", "additional": {"--mail-type": "END", "a": "b\nc"}}}
    with pytest.raises(StudyError) as err:
        parse_study(data, ".")
    msg = str(err.value)
    for where in ("name:", "executor.slurm.partition:", "executor.slurm.additional.a:"):
        assert f"{where} " in msg and "holds a line break or control character" in msg, where
    assert "'--mail-type' is not an sbatch option name" in msg
    assert shell_comment("a\nrm x") == "# a rm x"


def test_plan_refuses_missing_checkpoints_and_unknown_benchmarks(tmp_path, capsys):
    from lmms_ac.cli import main
    from lmms_ac.study.plan import preflight

    (tmp_path / "ckpt").mkdir()
    data = _study(tmp_path, pretrained=str(tmp_path / "ckpt"), stage1=str(tmp_path / "gone"), vision="clip:/no/tower")
    data["candidates"] = [{"name": "c", "stage1": "rel/a/b"}, {"name": "hub", "stage1": "org/name"}]
    data["benchmarks"] = ["mme", "mmee", "pope"]
    with pytest.raises(StudyError) as err:
        preflight(parse_study(data, tmp_path), task_names=["mme", "pope", "gqa"])
    msg = str(err.value)
    assert f"models[m].stage1: '{tmp_path / 'gone'}' does not exist; fix the path" in msg
    assert "models[m].vision: 'clip:/no/tower' (/no/tower) does not exist" in msg  # the spec's folder is checked
    assert f"candidates[c].stage1: 'rel/a/b' ({tmp_path / 'rel/a/b'}) does not exist" in msg
    assert "candidates[hub]" not in msg and "models[m].pretrained" not in msg and "'pope'" not in msg
    assert "benchmarks: 'mmee' is not an lmms-eval task; did you mean 'mme'" in msg
    # through `lmms-ac study plan` (a registered benchmark needs no task index): refused before anything is written
    data["benchmarks"] = ["mme"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["study", "plan", str(path), "--dry-run"]) == 2
    assert "does not exist; fix the path" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_plan_refuses_an_unknown_benchmark_with_did_you_mean(tmp_path, capsys):
    from lmms_ac.cli import main

    (tmp_path / "ckpt").mkdir()
    data = _study(tmp_path, pretrained=str(tmp_path / "ckpt"))
    data["benchmarks"] = ["mme", "mmee", "pope"]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["study", "plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "benchmarks: 'mmee' is not an lmms-eval task; did you mean 'mme'" in err and "'pope'" not in err
    # the user's own task folder (lmms_eval.extra_args --include_path) is indexed; a damaged YAML there is named
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "broken.yaml").write_bytes(b"task: x\n\xff\xfe")
    data["lmms_eval"] = {"extra_args": ["--include_path", str(tasks)]}
    path.write_text(yaml.safe_dump(data))
    assert main(["study", "plan", str(path)]) == 2
    assert f"check the task YAMLs under --include_path {tasks}" in capsys.readouterr().err
