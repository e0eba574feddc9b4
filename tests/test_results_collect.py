"""collect: lmms-eval results files (written by the installed lmms-eval's own EvaluationTracker, in
the exact layout of ``lmms_eval.evaluator.simple_evaluate``) -> the tidy table."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from lmms_ac.results.collect import collect, collect_results, load_mapping, variant_name
from lmms_ac.results.table import TABLE_COLUMNS, read_table

MME_CFG = {
    "task": "mme",
    "dataset_path": "lmms-lab/MME",
    "dataset_kwargs": {"token": True},
    "test_split": "test",
    "output_type": "generate_until",
    "doc_to_visual": "<function mme_doc_to_visual at 0x7f>",
    "doc_to_text": "<function mme_doc_to_text at 0x7f>",
    "doc_to_target": "answer",
    "process_results": "<function mme_process_results at 0x7f>",
    "metric_list": [
        {"metric": "mme_perception_score", "aggregation": "<function mme_aggregate_results>", "higher_is_better": True},
        {"metric": "mme_cognition_score", "aggregation": "<function mme_aggregate_results>", "higher_is_better": True},
    ],
    "generation_kwargs": {
        "max_new_tokens": 16,
        "temperature": 0,
        "top_p": 1.0,
        "num_beams": 1,
        "do_sample": False,
        "until": ["\n\n"],
    },
    "repeats": 1,
    "should_decontaminate": False,
    "metadata": [{"version": 0.0}],
    "lmms_eval_specific_kwargs": {"default": {"pre_prompt": "", "post_prompt": "\nAnswer ..."}},
}


def _task_cfg(
    task: str,
    base: str | None = None,
    perturbation: str | None = None,
    severity=None,
    seed=None,
    metrics=("exact_match",),
):
    cfg = (
        copy.deepcopy(MME_CFG)
        if (base or task) == "mme"
        else {
            "task": task,
            "dataset_path": f"lmms-lab/{task}",
            "test_split": "validation",
            "output_type": "generate_until",
            "metric_list": [{"metric": m} for m in metrics],
            "metadata": [{"version": 0.0}],
        }
    )
    cfg["task"] = task
    if perturbation:
        cfg["metadata"] = {
            "version": 0.0,
            "lmms_ac": {"base_task": base, "perturbation": perturbation, "severity": severity, "seed": seed},
        }
    return cfg


def _entry(task: str, metrics: dict, n: int = 20, stderr="N/A") -> dict:
    e = {"alias": task}
    for m, v in metrics.items():
        e[f"{m},none"] = v
        e["samples"] = n
        e[f"{m}_stderr,none"] = stderr
    return e


def results_doc(model_args: str, tasks: dict, date: str, limit=20) -> dict:
    """``tasks``: name -> (metrics dict, config dict, stderr). The dict simple_evaluate returns."""
    return {
        "results": {t: _entry(t, m, limit, se) for t, (m, _, se) in tasks.items()},
        "group_subtasks": {t: [] for t in reversed(list(tasks))},
        "configs": {t: cfg for t, (_, cfg, _) in sorted(tasks.items())},
        "versions": {t: "Yaml" for t in sorted(tasks)},
        "n-shot": {t: 0 for t in sorted(tasks)},
        "higher_is_better": {t: {m: True for m in ms} for t, (ms, _, _) in sorted(tasks.items())},
        "n-samples": {t: {"original": 2374, "effective": limit} for t in tasks},
        "config": {
            "model": "llava_ac",
            "model_args": model_args,
            "model_backend": "lmms_ac.models.llava_ac.LlavaAC (simple)",
            "batch_size": "1",
            "batch_sizes": [],
            "device": "cuda:0",
            "use_cache": None,
            "limit": limit,
            "offset": 0,
            "bootstrap_iters": 100000,
            "process_docs_parallel": 4,
            "gen_kwargs": "",
            "random_seed": 0,
            "numpy_seed": 1234,
            "torch_seed": 1234,
            "fewshot_seed": 1234,
        },
        "git_hash": None,
        "git_branch": None,
        "lmms_eval_version": "unknown@unknown",
        "date": date,
        "usage": {},
    }


def write_run(out: Path, model_args: str, tasks: dict, date: str, samples: dict | None = None) -> Path:
    """Write a run with the installed lmms-eval's EvaluationTracker (its file names and extra fields)."""
    from lmms_eval.loggers.evaluation_tracker import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(out))
    tracker.general_config_tracker.log_experiment_args(
        model_source="llava_ac",
        model_args=model_args,
        system_instruction=None,
        chat_template=None,
        fewshot_as_multiturn=False,
    )
    tracker.save_results_aggregated(results=results_doc(model_args, tasks, date), samples=samples, datetime_str=date)
    for task, rows in (samples or {}).items():
        tracker.save_results_samples(task_name=task, samples=rows)
    files = sorted(out.rglob(f"{date}_results.json"))
    assert files, "lmms-eval did not write the results file"
    return files[-1]


def mme_task(perception: float, cognition: float, **meta):
    name = meta.pop("name", "mme")
    return name, (
        {"mme_perception_score": perception, "mme_cognition_score": cognition},
        _task_cfg(name, **meta),
        "N/A",
    )


def simple_task(name: str, value, stderr=0.01, **meta):
    return name, ({"exact_match": value}, _task_cfg(name, **meta), stderr)


@pytest.fixture()
def runs(tmp_path):
    out = tmp_path / "logs"
    a = "pretrained=/ckpts/llava-clip336,variant=clip336"
    write_run(out, a, dict([mme_task(1500.0, 300.0), simple_task("textvqa_val", 0.46)]), "20250101_120000")
    # a later partial rerun of mme only
    write_run(out, a, dict([mme_task(1510.0, 310.0)]), "20250102_090000")
    # perturbed runs with seeds
    write_run(
        out,
        a,
        dict(
            [
                mme_task(
                    1200.0 + s,
                    250.0,
                    name=f"mme_tokperm_s{s}",
                    base="mme",
                    perturbation="token_permutation",
                    severity=1.0,
                    seed=s,
                )
                for s in (1, 2)
            ]
        ),
        "20250103_100000",
    )
    # second variant: no variant= -> basename of pretrained
    write_run(
        out,
        "pretrained=org/llava-dinov2-224,conv_template=vicuna_v1",
        dict([mme_task(1300.0, 280.0), simple_task("textvqa_val", 0.14)]),
        "20250101_130000",
    )
    return out


def test_layout_is_the_installed_lmms_eval_one(runs):
    f = sorted(runs.rglob("*_results.json"))[0]
    doc = json.loads(f.read_text())
    for key in (
        "results",
        "configs",
        "n-samples",
        "config",
        "date",
        "lmms_eval_version",
        "model_name",
        "task_hashes",
        "total_evaluation_time_seconds",
    ):
        assert key in doc
    assert f.name == "20250101_120000_results.json"


def test_collect_rows_and_columns(runs):
    t = collect_results([runs])
    assert list(t.columns) == TABLE_COLUMNS
    assert set(t.variant) == {"clip336", "llava-dinov2-224"}
    clean = t[(t.variant == "clip336") & (t.perturbation == "none")]
    # MME has two metrics -> two rows; newest rerun kept
    mme = clean[clean.task == "mme"].set_index("metric")["value"]
    assert mme.to_dict() == {"mme_perception_score": 1510.0, "mme_cognition_score": 310.0}
    # partial rerun did not remove textvqa from the older file
    tv = clean[clean.task == "textvqa_val"].iloc[0]
    assert tv.value == pytest.approx(0.46) and tv.stderr == pytest.approx(0.01) and tv.n == 20
    # lmms-eval wrote 12:00 in its default zone (Asia/Singapore, UTC+8) without an offset: stored in UTC with one
    assert tv.time == "2025-01-01T04:00:00+00:00" and tv.source.endswith("20250101_120000_results.json")
    assert tv.base_task == "textvqa_val" and tv.lmms_eval_version == "unknown@unknown"
    assert pd.isna(clean[clean.task == "mme"].stderr).all()  # "N/A" -> NaN


def test_run_times_read_in_lmms_evals_zone_and_stored_in_utc(runs):
    from lmms_ac.results.collect import collect

    times = set(collect([runs], zone="UTC").table.time)
    assert "2025-01-01T12:00:00+00:00" in times and all(t.endswith("+00:00") for t in times)
    ny = collect([runs], zone="America/New_York").table
    assert "2025-01-01T17:00:00+00:00" in set(ny.time)  # 12:00 EST = 17:00 UTC
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'.*--timezone"):
        collect([runs], zone="Mars/Base")


def test_perturbation_metadata(runs):
    t = collect_results([runs])
    p = t[t.perturbation == "token_permutation"]
    assert len(p) == 4  # 2 seeds x 2 metrics
    assert set(p.base_task) == {"mme"} and set(p.seed.astype(int)) == {1, 2} and set(p.severity) == {"1.0"}
    assert set(t[t.perturbation == "none"].seed.isna()) == {True}


def test_reruns_keep_newest_and_report_dropped(runs):
    got = collect([runs])
    assert len(got.dropped) == 2
    assert set(got.dropped.metric) == {"mme_perception_score", "mme_cognition_score"}
    assert all(s.endswith("20250101_120000_results.json") for s in got.dropped.source)
    assert all(s.endswith("20250102_090000_results.json") for s in got.dropped.kept_source)


def test_reruns_order_independent(runs):
    files = sorted(runs.rglob("*_results.json"))
    a = collect_results(files).sort_values(["variant", "task", "metric"]).reset_index(drop=True)
    b = collect_results(list(reversed(files))).sort_values(["variant", "task", "metric"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_mapping_csv_and_json(runs, tmp_path):
    csv = tmp_path / "map.csv"
    csv.write_text("old,new\nclip336,CLIP336\nllava-dinov2-224,DINOv2\n")
    assert set(collect_results([runs], mapping=csv).variant) == {"CLIP336", "DINOv2"}
    js = tmp_path / "map.json"
    js.write_text(json.dumps({"clip336": "C"}))
    assert set(collect_results([runs], mapping=js).variant) == {"C", "llava-dinov2-224"}
    assert set(collect_results([runs], mapping={"llava-dinov2-224": "D"}).variant) == {"clip336", "D"}
    assert load_mapping(None) == {}


def test_variant_name_rules():
    assert variant_name({"config": {"model_args": "pretrained=a/b/c/,variant=v1"}}) == "v1"
    assert variant_name({"config": {"model_args": "pretrained=a/b/ckpt"}}) == "ckpt"
    assert variant_name({"config": {"model_args": {"pretrained": "x/y"}}}) == "y"
    assert variant_name({"config": {"model_args": "device=cuda"}, "model_name": "org/m"}) == "m"
    assert variant_name({"config": {"model_args": "pretrained=x/full"}}, {"x/full": "F"}) == "F"
    with pytest.raises(ValueError, match="variant"):
        variant_name({"config": {"model_args": ""}})


def test_samples_give_n_when_results_lack_it(tmp_path):
    out = tmp_path / "logs"
    rows = [
        {
            "doc_id": i,
            "doc": {},
            "target": "yes",
            "arguments": [["q", {}]],
            "resps": [["yes"]],
            "filtered_resps": ["yes"],
            "doc_hash": "h",
            "exact_match": 1.0,
        }
        for i in range(7)
    ]
    f = write_run(
        out, "pretrained=m/v", dict([simple_task("textvqa_val", 0.5)]), "20250105_000000", samples={"textvqa_val": rows}
    )
    doc = json.loads(f.read_text())
    del doc["results"]["textvqa_val"]["samples"], doc["n-samples"]
    f.write_text(json.dumps(doc))
    t = collect_results([out])
    assert int(t.n.iloc[0]) == 7
    # samples files given explicitly are accepted too
    assert int(collect_results([f, *out.rglob("*samples*.jsonl")]).n.iloc[0]) == 7


def test_non_numeric_metrics_skipped_and_groups(tmp_path):
    out = tmp_path / "logs"
    f = write_run(out, "pretrained=m/v", dict([simple_task("textvqa_val", 0.5)]), "20250105_000000")
    doc = json.loads(f.read_text())
    doc["results"]["textvqa_val"]["submission,none"] = None
    doc["results"]["textvqa_val"]["submission_stderr,none"] = "N/A"
    doc["results"]["textvqa_val"]["exact_match,flexible"] = 0.6
    doc["groups"] = {"grp": {"alias": "grp", "exact_match,none": 0.55, "exact_match_stderr,none": 0.02}}
    f.write_text(json.dumps(doc))
    t = collect_results([f])
    assert set(zip(t.task, t.metric)) == {
        ("textvqa_val", "exact_match"),
        ("textvqa_val", "exact_match,flexible"),
        ("grp", "exact_match"),
    }


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="no results given"):
        collect([])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no lmms-eval results files"):
        collect([tmp_path / "empty"])
    bad = tmp_path / "x_results.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        collect([bad])
    bad.write_text(json.dumps({"foo": 1}))
    with pytest.raises(ValueError, match="not an lmms-eval results file"):
        collect([bad])


def test_cli_collect_writes_and_refuses_overwrite(runs, tmp_path, capsys):
    from lmms_ac.cli import main

    out = tmp_path / "table.csv"
    assert main(["collect", str(runs), "--out", str(out), "--dropped-out", str(tmp_path / "dropped.csv")]) == 0
    t = read_table(out)
    assert len(t) == len(collect_results([runs]))
    assert (tmp_path / "table.csv.provenance.json").exists()
    assert "2 row(s) from older reruns were dropped" in capsys.readouterr().out
    before = out.read_text()
    assert main(["collect", str(runs), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == before
    assert main(["collect", str(runs), "--out", str(out), "--overwrite"]) == 0
    assert main(["collect", str(tmp_path / "nope"), "--out", str(tmp_path / "t2.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "t2.csv").exists()


def test_model_argument_perturbation_is_recorded():
    """perturbation=... in lmms_ac_llava's model args applies to every task of the run."""
    from pathlib import Path

    from lmms_ac.results.collect import rows_from_results

    doc = {
        "results": {"mme": {"mme_perception_score,none": 10.0}},
        "configs": {"mme": {"metadata": [{"version": 0}]}},
        "config": {
            "model": "lmms_ac_llava",
            "model_args": "pretrained=/x/ckpt,perturbation=tokperm,perturbation_seed=3",
        },
        "date": 1.0,
    }
    (row,) = rows_from_results(doc, Path("/x/20260101_results.json"))
    assert (row["variant"], row["perturbation"], row["seed"], row["base_task"]) == ("ckpt", "tokperm", 3, "mme")
