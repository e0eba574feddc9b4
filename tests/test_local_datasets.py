"""`lmms-ac mirror` makes save_to_disk copies; LMMS_AC_DATASETS makes lmms-eval load them offline."""

from __future__ import annotations

import shutil
import textwrap

import pytest

from lmms_ac.cli import main
from lmms_ac.local_datasets import dataset_key, find_local_copy


@pytest.fixture()
def tiny_task(tmp_path):
    """A task whose dataset_path is a folder of parquet files (what a hub repo looks like to datasets)."""
    import datasets

    source = tmp_path / "hub" / "tiny-vqa"
    (source / "data").mkdir(parents=True)
    ds = datasets.Dataset.from_list([{"question": f"q{i}", "answer": "yes", "image": None} for i in range(3)])
    ds.to_parquet(str(source / "data" / "test-00000-of-00001.parquet"))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_vqa.yaml").write_text(
        textwrap.dedent(f"""
        task: tiny_local_vqa
        dataset_path: {source}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.no_visual
        doc_to_text: "{{{{question}}}}"
        doc_to_target: answer
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
        """)
    )
    (tasks / "utils.py").write_text("def no_visual(doc):\n    return []\n")
    return {"source": source, "tasks": str(tasks)}


def test_dataset_keys():
    assert dataset_key("lmms-lab/MME") == "lmms-lab__MME"
    assert dataset_key("lmms-lab/MMBench", "en") == "lmms-lab__MMBench--en"


@pytest.mark.slow
def test_mirror_then_load_offline(tiny_task, tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    assert main(["mirror", "tiny_local_vqa", "--to", str(mirror), "--include-path", tiny_task["tasks"]]) == 0
    copy = mirror / dataset_key(str(tiny_task["source"]))
    assert (copy / "dataset_dict.json").is_file()
    shutil.rmtree(tiny_task["source"])  # the "hub" is gone

    monkeypatch.setenv("LMMS_AC_DATASETS", str(mirror))
    assert find_local_copy(str(tiny_task["source"])) == copy
    import lmms_eval.models  # noqa: F401  (installs the plugin hooks, as the CLI does)
    from lmms_eval.tasks import TaskManager, get_task_dict

    task = get_task_dict(["tiny_local_vqa"], TaskManager(verbosity="ERROR", include_path=tiny_task["tasks"]))[
        "tiny_local_vqa"
    ]
    assert [d["question"] for d in task.test_docs()] == ["q0", "q1", "q2"]

    assert main(["datasets", "tiny_local_vqa", "--include-path", tiny_task["tasks"]]) == 0
    assert str(copy) in capsys.readouterr().out


@pytest.mark.slow
def test_mirror_keeps_existing_copies(tiny_task, tmp_path):
    mirror = tmp_path / "mirror"
    args = ["mirror", "tiny_local_vqa", "--to", str(mirror), "--include-path", tiny_task["tasks"]]
    assert main(args) == 0
    marker = mirror / dataset_key(str(tiny_task["source"])) / "KEEP"
    marker.write_text("x")
    assert main(args) == 0 and marker.exists()  # not overwritten
    assert main(args + ["--overwrite"]) == 0 and not marker.exists()


@pytest.mark.slow
def test_unknown_task_suggests_names(tmp_path, capsys):
    assert main(["mirror", "mmee", "--to", str(tmp_path)]) == 2
    assert "did you mean" in capsys.readouterr().err


@pytest.mark.slow
def test_a_damaged_yaml_under_include_path_is_a_clear_error(tmp_path, capsys):
    """lmms-eval reads every YAML under --include-path: a non-UTF-8 one is one line naming the folder, not a
    traceback from its task index."""
    from lmms_ac.cli import main

    bad = tmp_path / "tasks"
    bad.mkdir()
    (bad / "broken.yaml").write_bytes(b"task: x\ndataset_path: \xff\xfe\n")
    assert main(["datasets", "mme", "--include-path", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cannot read the task YAMLs under --include-path" in err and str(bad) in err and "Traceback" not in err
