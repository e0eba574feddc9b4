"""Robustness tasks generated from the catalogue: indexing through the real TaskManager hook,
configs that reuse the base task, metadata, the support guard, name lookup in a fresh process,
the regeneration hash, a probe added from outside the package, and ``lmms-ac tasks``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from lmms_ac.plugin import TaskManagerIndex

PROBE_MODULE = '''
import torch

from lmms_ac.robustness import register_probe


@register_probe(name="invert", stage="image")
def invert(x, ctx):
    """Photographic negative."""
    return 1.0 - x
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory, mirror_dir):
    cache = tmp_path_factory.mktemp("lmms_ac_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMMS_AC_CACHE", str(cache))
        mp.setenv("LMMS_AC_DATASETS", mirror_dir)
        for var in ("LMMS_AC_PROBES", "LMMS_AC_VARIANTS", "LMMS_AC_SYNTHETIC"):
            mp.delenv(var, raising=False)
        yield {"cache": cache, "mirror": mirror_dir}


@pytest.fixture(scope="module")
def tm(env):
    import lmms_eval.models  # noqa: F401  (installs the lmms-ac TaskManager hook)
    from lmms_eval.tasks import TaskManager

    return TaskManager()


@pytest.fixture(scope="module")
def loaded(tm):
    return tm.load_task_or_group(["mme", "mme_tokperm", "mme_pdrop_random50", "mme_synthetic"])


@pytest.fixture
def no_support():
    from lmms_ac.robustness import tasks as T

    before = T.perturbation_support()
    T.reset_perturbation_support()
    yield T
    T.reset_perturbation_support()
    for stage, model in before.items():
        T.declare_perturbation_support([stage], model)


@pytest.fixture
def registries():
    """Snapshot/restore the catalogue, benchmark and variant registries around a test."""
    from lmms_ac.robustness import tasks as T
    from lmms_ac.robustness.catalogue import PERTURBATIONS

    snaps = [(r, r.snapshot()) for r in (PERTURBATIONS, T.BENCHMARKS, T.VARIANTS)]
    yield T
    for reg, snap in snaps:
        reg.restore(snap)  # bumps the registry versions: cached name lookups are dropped


# ---------------------------------------------------------------------------------- index
@pytest.mark.slow
def test_benchmarks_map_to_single_indexed_tasks(tm):
    from lmms_ac.robustness.tasks import BENCHMARKS

    titles = {BENCHMARKS.get(k).title for k in BENCHMARKS.names()}
    assert titles == {
        "MMBench",
        "MME",
        "MMMU",
        "OKVQA",
        "TextVQA",
        "VizWiz",
        "ScienceQA-IMG",
        "SEED-IMG",
        "MMVP",
        "Q-Bench",
        "MMStar",
        "MM-Vet",
        "LLaVA-W",
        "MathVista",
        "ChartQA",
        "AI2D",
    }
    for key in BENCHMARKS.names():
        assert tm.task_index[BENCHMARKS.get(key).task]["type"] == "task", key
    info = tm._lmms_ac_robustness
    assert info.skipped == [] and info.tasks == 16 * 109


@pytest.mark.slow
def test_task_manager_lists_variants_and_tags(tm):
    from lmms_ac.robustness.probes import group_tasks

    for name in (
        "mme_tokperm",
        "mme_tokperm_s4",
        "seed_patchshuffle4",
        "mmbench_en_dev_pdrop_salient30",
        "ok_vqa_val2014_pdrop_nonsalient90",
        "mme_synthetic",
        "ai2d_tokgroup_m2_g3",
    ):
        assert name in tm.all_subtasks, name
    assert "mme_tokperm_s5" not in tm.all_tasks
    assert tm.task_index["mme_tokperm_5seeds"]["task"] == ["mme_tokperm"] + [f"mme_tokperm_s{k}" for k in range(1, 5)]
    assert "mme_tokperm_5seeds" in tm.all_tags and "lmms_ac_tokperm" in tm.all_tags
    assert len(tm.task_index["lmms_ac_tokperm"]["task"]) == 16 * 5
    assert tm.task_index["mme_tokgroup_m4"]["task"] == group_tasks("mme", 4)
    assert len(tm.task_index["mme_pdrop_random_all"]["task"]) == 9 * 5
    assert len(tm.task_index["lmms_ac_robustness"]["task"]) == 16 * 109
    assert "seed_robustness" in tm.all_tags and "lmms_ac_robustness_law" in tm.all_tags
    assert sorted(tm.match_tasks(["mme_tokperm_5seeds", "mme_pdrop_salient30"])) == [
        "mme_pdrop_salient30",
        "mme_tokperm_5seeds",
    ]


@pytest.mark.slow
def test_generated_config_reuses_the_base_task(loaded):
    base, task = loaded["mme"], loaded["mme_tokperm"]
    assert task.config.task == "mme_tokperm"
    for attr in ("process_results", "doc_to_text"):
        fa, fb = getattr(task.config, attr), getattr(base.config, attr)
        assert (fa.__module__, fa.__qualname__) == (fb.__module__, fb.__qualname__), attr
    assert [m["metric"] for m in task.config.metric_list] == [m["metric"] for m in base.config.metric_list]
    assert task.config.generation_kwargs == base.config.generation_kwargs
    assert task.DATASET_PATH == base.DATASET_PATH and len(task.test_docs()) == len(base.test_docs()) == 12
    doc = task.test_docs()[0]
    assert task.doc_to_text(doc) == base.doc_to_text(doc)


@pytest.mark.slow
def test_a_seeds_tag_loads_its_five_tasks(tm):
    loaded = tm.load_task_or_group(["mme_tokperm_5seeds"])
    assert sorted(loaded) == ["mme_tokperm"] + [f"mme_tokperm_s{k}" for k in range(1, 5)]
    assert [loaded[n].config.metadata["lmms_ac"]["seed"] for n in sorted(loaded)] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_metadata_survives_into_the_results_config(loaded):
    from lmms_eval.utils import handle_non_serializable

    config = json.loads(json.dumps(loaded["mme_pdrop_random50"].dump_config(), default=handle_non_serializable))
    meta = config["metadata"]
    assert meta["version"] == 0.0  # the base's `[{version: 0.0}]` merged into the dict
    assert meta["lmms_ac"] == {
        **meta["lmms_ac"],
        "base_task": "mme",
        "perturbation": "pdrop_random50",
        "form": "pdrop_random50",
        "name": "pdrop_random",
        "stage": "image",
        "params": {"ratio": 0.5},
        "severity": 0.5,
        "seed": 0,
        "stochastic": True,
        "seeds": 5,
    }
    assert "lmms_ac_pdrop_random" in config["tag"]


@pytest.mark.slow
def test_results_collector_reads_the_generated_metadata(tm):
    """The seeds of one probe share ``perturbation``; the collector (lmms_ac.results) groups them."""
    from lmms_eval import utils
    from lmms_eval.api.task import TaskConfig
    from lmms_eval.utils import handle_non_serializable

    from lmms_ac.results.collect import rows_from_results

    names = ["mme_tokperm", "mme_tokperm_s1"]
    configs = {}
    for n in names:
        cfg = utils.load_yaml_config(tm.task_index[n]["yaml_path"], mode="full")
        configs[n] = json.loads(json.dumps(TaskConfig(**cfg).to_dict(), default=handle_non_serializable))
    doc = {
        "results": {n: {"alias": n, "mme_perception_score,none": 1000.0 + i} for i, n in enumerate(names)},
        "configs": configs,
        "config": {"model": "lmms_ac_llava", "model_args": "pretrained=/x/tiny"},
        "date": "20250101_000000",
    }
    rows = rows_from_results(doc, Path("20250101_000000_results.json"))
    assert sorted((r["task"], r["base_task"], r["perturbation"], r["seed"]) for r in rows) == [
        ("mme_tokperm", "mme", "tokperm", 0),
        ("mme_tokperm_s1", "mme", "tokperm", 1),
    ]


@pytest.mark.slow
def test_yaml_of_a_task_without_local_data_loads(tm):
    """mmmu_val keeps its dict metadata (interleaved_format) next to ours; include chains resolve."""
    from lmms_eval import utils

    config = utils.load_yaml_config(tm.task_index["mmmu_val_tokperm_s2"]["yaml_path"], mode="full")
    base = utils.load_yaml_config(tm.task_index["mmmu_val"]["yaml_path"], mode="full")
    assert config["task"] == "mmmu_val_tokperm_s2" and config["dataset_path"] == base["dataset_path"]
    assert config["metadata"]["interleaved_format"] is False
    assert config["metadata"]["lmms_ac"]["seed"] == 2
    assert (config["metadata"]["lmms_ac"]["perturbation"], config["metadata"]["lmms_ac"]["form"]) == (
        "tokperm",
        "tokperm_s2",
    )
    assert config["process_results"].__qualname__ == base["process_results"].__qualname__
    mmb = utils.load_yaml_config(tm.task_index["mmbench_en_dev_tokgroup_m4_g5"]["yaml_path"], mode="full")
    assert mmb["doc_to_text"].__qualname__ == "mmbench_doc_to_text" and mmb["test_split"] == "dev"


# ---------------------------------------------------------------------------------- guard
@pytest.mark.slow
def test_guard_refuses_an_undeclared_model_then_passes(loaded, no_support):
    T = no_support
    task, base = loaded["mme_tokperm"], loaded["mme"]
    doc = task.test_docs()[0]
    with pytest.raises(T.PerturbationNotSupportedError) as err:
        task.doc_to_visual(doc)
    message = str(err.value)
    assert "mme_tokperm" in message and "'tokperm'" in message and "--model lmms_ac_llava" in message
    T.declare_perturbation_support(["tokens"])
    got, want = task.doc_to_visual(doc), base.doc_to_visual(doc)
    assert len(got) == len(want) == 1 and got[0].tobytes() == want[0].tobytes()
    with pytest.raises(T.PerturbationNotSupportedError, match="image-level perturbation 'pdrop_random50'"):
        loaded["mme_pdrop_random50"].doc_to_visual(doc)  # only token support was declared
    T.declare_perturbation_support()
    assert loaded["mme_pdrop_random50"].doc_to_visual(doc)[0].size == want[0].size


@pytest.mark.slow
def test_synthetic_task_needs_no_declaration_and_reads_the_synthetic_set(loaded, tm, no_support, tmp_path, monkeypatch):
    from PIL import Image

    from lmms_ac.robustness.synthesis import synthesize

    task = loaded["mme_synthetic"]
    doc = task.test_docs()[0]
    with pytest.raises(FileNotFoundError, match="lmms-ac synthesize mme --to DIR"):
        task.doc_to_visual(doc)
    # a trivial captioner / generator / similarity: the task path is what is tested here
    result = synthesize(
        "mme",
        tmp_path,
        captioner=lambda ims: [f"size {im.size}" for im in ims],
        t2i=lambda prompts, seeds: [Image.new("RGB", (16, 16), (s % 251, 7, 9)) for s in seeds],
        clip=lambda a, b: [0.25] * len(a),
        limit=4,
        task_manager=tm,
    )
    assert (result.documents, result.images) == (4, 2)  # MME asks two questions per image
    monkeypatch.setenv("LMMS_AC_SYNTHETIC", str(tmp_path))
    got = task.doc_to_visual(doc)
    assert got[0].size == (16, 16) and got[0].tobytes() != loaded["mme"].doc_to_visual(doc)[0].tobytes()
    with pytest.raises(KeyError, match="--limit 4"):
        task.doc_to_visual(task.test_docs()[7])


# ---------------------------------------------------------------------------------- names
@pytest.mark.slow
def test_perturbation_for_task_in_a_fresh_process(env):
    from lmms_ac.robustness import perturbation_for_task

    names = [
        "mme_tokperm",
        "mme_tokperm_s3",
        "seed_patchshuffle14_s2",
        "mmbench_en_dev_pdrop_salient30",
        "ok_vqa_val2014_tokgroup_m4_g5",
        "mathvista_testmini_format_synthetic",
        "mme",
        "textvqa_val",
        "mme_tokperm_5seeds",
        "unknown_tokperm",
        "llava_in_the_wild_pdrop_random90_s4",
    ]
    code = textwrap.dedent(f"""
        import json, sys, time
        from lmms_ac.robustness.tasks import perturbation_for_task
        out = [None if (p := perturbation_for_task(n)) is None else [p.to_string(), p.stage, p.seed] for n in {names!r}]
        print(json.dumps({{"out": out, "lmms_eval": "lmms_eval" in sys.modules}}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LMMS_AC_PROBES": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = [None if (p := perturbation_for_task(n)) is None else [p.to_string(), p.stage, p.seed] for n in names]
    assert res["out"] == expected
    assert res["out"][:3] == [["tokperm", "tokens", 0], ["tokperm_s3", "tokens", 3], ["patchshuffle14_s2", "image", 2]]
    assert res["out"][6:10] == [None] * 4
    assert not res["lmms_eval"]  # the name alone is enough: no TaskManager, no lmms-eval import
    # the cost of cached lookups is measured by bench/bench_task_index.py


@pytest.mark.slow
def test_regeneration_only_when_the_hash_changes(tm):
    from lmms_ac.robustness import tasks as T

    info = tm._lmms_ac_robustness
    index_json = info.directory / "index.json"
    stamp = index_json.stat().st_mtime_ns
    bases = {T.BENCHMARKS.get(k).task for k in T.BENCHMARKS.names()}

    def fake():
        return types.SimpleNamespace(_task_index={b: dict(tm.task_index[b]) for b in bases})

    again = T.extend_index(TaskManagerIndex(fake()))
    assert not again.generated and again.directory == info.directory and again.tasks == info.tasks
    assert index_json.stat().st_mtime_ns == stamp  # read, not rewritten (its cost: bench/bench_task_index.py)
    only = T.selected_families("tokperm,synthetic")
    first, second = (
        T.extend_index(TaskManagerIndex(fake()), families=only),
        T.extend_index(TaskManagerIndex(fake()), families=only),
    )
    assert first.generated and not second.generated and first.hash != info.hash
    assert first.tasks == 16 * 6 and first.directory.parent == info.directory.parent


def test_importance_families_are_opt_in_and_match_the_probe_helpers():
    from lmms_ac.robustness import tasks as T
    from lmms_ac.robustness.probes import group_noise_tasks, group_tasks, noise_tasks

    default = {s.name for s in T.task_specs(["mme"])}
    assert set(group_tasks("mme", 2)) | set(group_tasks("mme", 4)) <= default
    assert not any(n.startswith("mme_toknoise") for n in default)
    spec = {s.name for s in T.task_specs(["mme"], T.selected_families("default,toknoise,layernoise,-synthetic"))}
    assert {n for names in group_noise_tasks("mme", 4).values() for n in names} <= spec
    assert set(noise_tasks("mme", "layernoise_l16")) <= spec and "mme_synthetic" not in spec
    with pytest.raises(KeyError, match="did you mean 'toknoise'"):
        T.selected_families("toknoize")


# ---------------------------------------------------------------------------------- new probes
@pytest.mark.slow
def test_new_probe_from_outside_the_package(tmp_path, env):
    """A module in a temp dir registers a probe; LMMS_AC_PROBES makes a fresh process (the lmms-eval
    TaskManager and the name lookup) see it with no other edit."""
    (tmp_path / "my_probes.py").write_text(PROBE_MODULE)
    code = textwrap.dedent("""
        import json, torch
        import lmms_eval.models  # the lmms-ac hook, as in the lmms-eval CLI
        from lmms_eval.tasks import TaskManager
        from lmms_eval import utils
        from lmms_ac.robustness import perturbation_for_task

        tm = TaskManager()
        p = perturbation_for_task("mme_invert")
        x = torch.rand(3, 8, 8)
        cfg = utils.load_yaml_config(tm.task_index["mme_invert"]["yaml_path"], mode="full")
        print(json.dumps({"listed": [n for n in ("mme_invert", "seed_invert", "lmms_ac_invert") if n in tm.all_tasks],
                          "p": [p.to_string(), p.stage, type(p).__name__],
                          "applies": bool(torch.allclose(p(x, p.context("mme_invert", 0, (2, 2), 4)), 1 - x)),
                          "meta": cfg["metadata"]["lmms_ac"]["perturbation"], "base": cfg["dataset_path"]}))
    """)
    env_vars = {
        **os.environ,
        "LMMS_AC_PROBES": "my_probes",
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "LMMS_AC_CACHE": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env_vars, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["listed"] == ["mme_invert", "seed_invert", "lmms_ac_invert"]
    assert res["p"] == ["invert", "image", "InvertProbe"] and res["applies"]
    assert res["meta"] == "invert" and res["base"] == "lmms-lab-encoder/MME"


def test_register_probe_with_parameters_and_benchmark(registries):
    T = registries
    import torch

    from lmms_ac.robustness.base import PERCENT

    @T.register_probe(
        name="gnoise",
        stage="image",
        stochastic=True,
        form="gnoise{sigma}",
        codecs={"sigma": PERCENT},
        variants=[{"sigma": 0.1}, {"sigma": 0.3}],
    )
    def gaussian_noise(x, ctx, sigma):
        return (x + sigma * torch.randn(x.shape, generator=ctx.generator())).clamp(0, 1)

    T.register_benchmark("realworldqa", "realworldqa", studies=["perception"])
    names = {s.name for s in T.task_specs(["mme", "realworldqa"])}
    assert {"mme_gnoise10", "mme_gnoise30_s4", "realworldqa_gnoise10", "realworldqa_tokperm"} <= names
    p = T.perturbation_for_task("realworldqa_gnoise30_s2")
    assert (p.name, p.sigma, p.seed) == ("gnoise", 0.3, 2)
    x = torch.rand(3, 8, 8)
    ctx = p.context("realworldqa_gnoise30_s2", 5, (2, 2), 4)
    assert torch.equal(p(x, ctx), p(x, ctx)) and not torch.equal(p(x, ctx), x)
    assert gaussian_noise.perturbation_class is type(p)
    with pytest.raises(ValueError, match="already registered"):
        T.register_probe(lambda x, ctx: x, name="tokperm", stage="tokens")
    with pytest.raises(ValueError, match="pass variants"):
        T.register_probe(lambda x, ctx, k: x, name="needsparams", form="needsparams{k}")
    with pytest.raises(ValueError, match="no dots"):
        T.register_benchmark("bad", "bad.name")


# ---------------------------------------------------------------------------------- CLI
def test_cli_lists_tasks_and_tags(capsys, env):
    from lmms_ac.cli import main

    assert main(["tasks", "--benchmark", "mme", "--perturbation", "tokperm"]) == 0
    out = capsys.readouterr().out
    assert "mme_tokperm_s4" in out and "mme_tokperm_5seeds" in out and "5 tasks" in out
    assert main(["tasks", "-b", "seed_img", "--stage", "tokens", "--tags"]) == 0
    out = capsys.readouterr().out
    assert "seed_tokgroup_m4" in out and "lmms_ac_tokperm" in out and "patchshuffle" not in out
    assert main(["tasks", "-p", "pdrop_salient30"]) == 0
    assert "16 tasks" in capsys.readouterr().out
    assert main(["tasks", "-b", "mmbenc"]) == 2
    assert "did you mean 'mmbench'" in capsys.readouterr().err
