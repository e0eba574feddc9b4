"""The real lmms-eval CLI runs our model and tasks: no --include_path, offline local datasets,
batched and data-parallel runs agree sample for sample, and a seeded token permutation applies."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here starts the lmms-eval CLI (or builds on a run that did)

BIN = Path(sys.executable).parent


def run_lmms_eval(
    workdir: Path,
    ckpt: str,
    mirror: str,
    tasks: str,
    out: str,
    model_args: str = "",
    nproc: int = 1,
    batch_size: int = 8,
    extra_env=None,
) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "LMMS_AC_DATASETS": mirror,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        **(extra_env or {}),
    }
    env.pop("LMMS_EVAL_PLUGINS", None)
    args = [
        "--model",
        "lmms_ac_llava",
        "--model_args",
        f"pretrained={ckpt},device=cpu" + (f",{model_args}" if model_args else ""),
        "--tasks",
        tasks,
        "--batch_size",
        str(batch_size),
        "--output_path",
        out,
        "--log_samples",
        "--verbosity",
        "INFO",
    ]
    if nproc == 1:
        cmd = [str(BIN / "lmms-eval"), *args]
    else:
        # CPU data parallel: torchrun starts the processes, ACCELERATE_USE_CPU=1 makes accelerate join them in a
        # gloo group (accelerate launch --cpu starts one process; without the flag each rank believes it is alone)
        env["ACCELERATE_USE_CPU"] = "1"
        cmd = [
            str(BIN / "torchrun"),
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            str(29500 + os.getpid() % 1000),
            "-m",
            "lmms_eval",
            *args,
        ]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    results = sorted(glob.glob(f"{out}/**/*_results.json", recursive=True))
    # lmms-eval 0.7.3 exits 0 when evaluation raises; the missing results file is the tell
    assert results, f"no results file under {out}:\n" + (proc.stdout + proc.stderr)[-6000:]
    samples = {}
    for path in glob.glob(f"{out}/**/*_samples_*.jsonl", recursive=True):
        task = path.rsplit("_samples_", 1)[1][: -len(".jsonl")]
        with open(path) as fh:
            samples[task] = {row["doc_id"]: row["filtered_resps"] for row in map(json.loads, fh)}
    return {"results": json.load(open(results[-1])), "samples": samples, "log": proc.stdout + proc.stderr, "out": out}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, llava_hf_dir, mirror_dir):
    work = tmp_path_factory.mktemp("work")
    (work / "mme").mkdir()  # a directory named like a task must not hide the task (lmms-eval pitfall)
    return run_lmms_eval(work, llava_hf_dir, mirror_dir, "mme,seed", str(work / "out"))


def test_cli_scores_mme_and_seed_without_include_path(clean_run):
    res = clean_run["results"]["results"]
    assert "mme_perception_score,none" in res["mme"]
    assert "mme_cognition_score,none" in res["mme"]
    assert "seed_image,none" in res["seed"]
    assert 0 <= res["seed"]["seed_image,none"] <= 1
    assert "local copy" in clean_run["log"]  # datasets came from the mirror, not a hub
    assert clean_run["results"]["n-samples"]["seed"]["effective"] == 6  # video questions filtered out
    assert clean_run["results"]["n-samples"]["mme"]["effective"] == 12


def test_two_processes_give_the_same_samples(clean_run, tmp_path, llava_hf_dir, mirror_dir):
    dp = run_lmms_eval(tmp_path, llava_hf_dir, mirror_dir, "mme,seed", str(tmp_path / "out"), nproc=2, batch_size=3)
    assert "rank 1 of 2" in dp["log"]
    assert dp["samples"] == clean_run["samples"]
    assert dp["results"]["results"]["mme"] == clean_run["results"]["results"]["mme"]


def test_token_permutation_is_seeded_and_rank_independent(clean_run, tmp_path, llava_hf_dir, mirror_dir):
    one = run_lmms_eval(
        tmp_path / "a",
        llava_hf_dir,
        mirror_dir,
        "mme",
        str(tmp_path / "a" / "out"),
        model_args="perturbation=tokperm,perturbation_seed=3",
    )
    two = run_lmms_eval(
        tmp_path / "b",
        llava_hf_dir,
        mirror_dir,
        "mme",
        str(tmp_path / "b" / "out"),
        model_args="perturbation=tokperm,perturbation_seed=3",
        nproc=2,
        batch_size=2,
    )
    assert one["samples"]["mme"] == two["samples"]["mme"]
    assert one["samples"]["mme"] != clean_run["samples"]["mme"]  # the permutation reached the model
    # the hooks' catalogue object is stamped on the task's metadata, which collect reads (no string re-parsing)
    (meta,) = [
        m["lmms_ac"] for m in one["results"]["configs"]["mme"]["metadata"] if isinstance(m, dict) and "lmms_ac" in m
    ]
    assert (meta["perturbation"], meta["seed"], meta["base_task"]) == ("tokperm", 3, "mme")


def test_unknown_model_argument_lists_valid_ones(tmp_path, llava_hf_dir, mirror_dir):
    env = {**os.environ, "LMMS_AC_DATASETS": mirror_dir, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            str(BIN / "lmms-eval"),
            "--model",
            "lmms_ac_llava",
            "--model_args",
            f"pretrained={llava_hf_dir},bogus_arg=1",
            "--tasks",
            "mme",
            "--verbosity",
            "DEBUG",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "unknown model argument(s) for lmms_ac_llava: bogus_arg" in text and "vision_tower" in text


@pytest.fixture(scope="module")
def generated_run(tmp_path_factory, llava_hf_dir, mirror_dir):
    work = tmp_path_factory.mktemp("generated")
    return run_lmms_eval(
        work, llava_hf_dir, mirror_dir, "mme_tokperm_s2,mme_patchshuffle4,mme_pdrop_random50", str(work / "out")
    )


def test_generated_robustness_task_runs_end_to_end(clean_run, generated_run):
    """`mme_tokperm_s2` is generated from the catalogue; its results carry the metadata the collector reads."""
    run = generated_run
    meta = run["results"]["configs"]["mme_tokperm_s2"]["metadata"]["lmms_ac"]
    assert (meta["base_task"], meta["perturbation"], meta["seed"]) == ("mme", "tokperm", 2)
    assert run["samples"]["mme_tokperm_s2"] != clean_run["samples"]["mme"]
    assert run["samples"]["mme_patchshuffle4"] != clean_run["samples"]["mme"]
    assert "mme_perception_score,none" in run["results"]["results"]["mme_tokperm_s2"]
    # PatchDrop reports the fraction of cells it actually removed (random: r of the cells, rounded per image)
    assert run["results"]["results"]["mme_pdrop_random50"]["cells_dropped,none"] == pytest.approx(0.5, abs=0.07)
    assert "cells_dropped,none" not in run["results"]["results"]["mme_tokperm_s2"]


def test_collect_and_robustness_table_on_real_output(clean_run, generated_run, tmp_path):
    from lmms_ac.cli import main
    from lmms_ac.results.collect import collect_results

    table = collect_results([clean_run["out"], generated_run["out"]])
    clean = table[table["perturbation"] == "none"]
    assert set(zip(clean["task"], clean["metric"])) == {
        ("mme", "mme_perception_score"),
        ("mme", "mme_cognition_score"),
        ("seed", "seed_image"),
    }
    assert set(table["variant"]) == {"tiny-llava-hf"}  # from pretrained= (no variant= given)
    perm = table[(table["perturbation"] == "tokperm") & (table["metric"] == "mme_perception_score")]
    assert perm[["base_task", "seed", "n"]].values.tolist() == [["mme", 2, 12]]
    shuffle = table[table["perturbation"] == "patchshuffle4"]
    assert set(shuffle["base_task"]) == {"mme"}
    out = tmp_path / "table.csv"
    assert main(["collect", clean_run["out"], generated_run["out"], "--out", str(out)]) == 0
    assert main(["robustness", str(out), "--out", str(tmp_path / "robust.csv")]) == 0
    import pandas as pd

    robust = pd.read_csv(tmp_path / "robust.csv")
    pdrop = robust[robust["perturbation"] == "pdrop_random50"]
    assert (
        len(pdrop) and pdrop["cells_dropped"].between(0.43, 0.57).all() and "cells_dropped" not in set(robust["metric"])
    )
    import pandas as pd

    robust = pd.read_csv(tmp_path / "robust.csv")
    assert {"tokperm", "patchshuffle4"} <= set(robust["perturbation"])
    assert main(["collect", clean_run["out"], "--out", str(out)]) == 2  # never overwritten silently


def test_robustness_task_on_a_model_that_cannot_apply_it_fails(tmp_path, llava_hf_dir, mirror_dir):
    env = {**os.environ, "LMMS_AC_DATASETS": mirror_dir, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [
            str(BIN / "lmms-eval"),
            "--model",
            "llava_hf",
            "--model_args",
            f"pretrained={llava_hf_dir},device_map=cpu",
            "--tasks",
            "mme_tokperm",
            "--device",
            "cpu",
            "--output_path",
            str(tmp_path / "out"),
            "--verbosity",
            "INFO",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    text = proc.stdout + proc.stderr
    assert "lmms_ac_llava" in text and "tokperm" in text  # the error names the fix
    assert not list((tmp_path / "out").rglob("*_results.json"))  # never a silent clean run
