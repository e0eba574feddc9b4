"""Issue 9, items 3, 5, 7 (datasets --verify), 11, 13: mirrors stay read-only and inside their
directory, `lmms-ac datasets`/`mirror` know our tasks, truncated images are found, and messages
name the problem."""

from __future__ import annotations

import io
import shutil
import textwrap
from pathlib import Path

import pytest

from lmms_ac.cli import main
from lmms_ac.local_datasets import copy_path, dataset_key, find_local_copy


def snapshot(root: Path) -> dict:
    """Every file under ``root`` with its size and mtime: what a read-only mirror must keep.
    (Tests run as root, which writes through permissions, so a chmod'ed mirror would prove nothing.)"""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# ------------------------------------------------------------------ item 11: keys stay inside the mirror
@pytest.mark.parametrize(
    "path, name",
    [
        ("lmms-lab/MME", "../../etc"),
        ("..", None),
        ("../..", "x"),
        ("a", ".."),
        ("a", "/abs/olute"),
        (".hidden", None),
        ("lmms-lab/MME", "x/../../y"),
        ("", ""),
    ],
)
def test_dataset_keys_are_one_safe_component(tmp_path, path, name):
    key = dataset_key(path, name)
    assert "/" not in key and not key.startswith(".") and key not in ("", ".", "..")
    assert copy_path(tmp_path, path, name).parent == tmp_path


def test_known_keys_are_unchanged():
    assert dataset_key("lmms-lab/MME") == "lmms-lab__MME"
    assert dataset_key("lmms-lab/MMBench", "en") == "lmms-lab__MMBench--en"


def test_a_dataset_name_cannot_reach_a_copy_outside_the_mirror(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "x--x").mkdir(parents=True)  # lets `x--x/../../outside` resolve to tmp_path/outside
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "dataset_dict.json").write_text("{}")
    monkeypatch.setenv("LMMS_AC_DATASETS", str(mirror))
    assert find_local_copy("x", "x/../../outside") is None
    assert find_local_copy("../outside") is None


# ------------------------------------------------------------------ item 13: invalid config.json
def test_invalid_config_json_names_the_file(tmp_path):
    from lmms_ac.vlm.loaders import read_config

    (tmp_path / "config.json").write_text('{"model_type": "llava", ')
    with pytest.raises(ValueError, match=f"{tmp_path / 'config.json'} is not valid JSON"):
        read_config(str(tmp_path))


# ------------------------------------------------------------------ helpers for the lmms-eval side
@pytest.fixture()
def copied_mirror(mirror_dir, tmp_path) -> Path:
    copy = tmp_path / "mirror"
    shutil.copytree(mirror_dir, copy)
    return copy


def _missing_task(tmp_path: Path) -> str:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "gone.yaml").write_text(
        textwrap.dedent(f"""
        task: hardening_gone
        dataset_path: {tmp_path / "no-such-hub-repo"}
        test_split: test
        output_type: generate_until
        doc_to_visual: !function utils.no_visual
        doc_to_text: question
        doc_to_target: answer
        metric_list:
          - metric: exact_match
        """)
    )
    (tasks / "utils.py").write_text("def no_visual(doc):\n    return []\n")
    return str(tasks)


# ------------------------------------------------------------------ item 5: our tasks are visible
@pytest.mark.slow
def test_datasets_command_knows_our_tasks(copied_mirror, monkeypatch, capsys):
    monkeypatch.setenv("LMMS_AC_DATASETS", str(copied_mirror))
    assert main(["datasets", "mme", "seed", "seed_image", "mme_tokperm"]) == 0
    out = capsys.readouterr().out
    seed_copy = str(copied_mirror / "lmms-lab-encoder__SEED-Bench")
    lines = {line.split("\t")[0]: line for line in out.splitlines() if "\t" in line}
    assert lines["seed"].endswith(seed_copy)
    assert lines["mme_tokperm"].endswith(str(copied_mirror / "lmms-lab-encoder__MME"))


# ------------------------------------------------------------------ items 3 and 7: read-only mirror, --verify
def _damaged_mirror(root: Path) -> None:
    """The tiny MME/SEED copies with doc 3 of MME and doc 2 of SEED cut short mid-file."""
    import datasets

    from lmms_ac.testing import datasets as tiny

    tiny.write_mirror(str(root))
    for key in (dataset_key(tiny.MME_PATH), dataset_key(tiny.SEED_PATH)):
        path = root / key
        ds = datasets.load_from_disk(str(path))["test"]
        is_list = not isinstance(ds.features["image"], datasets.Image)
        raw = ds.cast_column(
            "image", datasets.Sequence(datasets.Image(decode=False)) if is_list else datasets.Image(decode=False)
        )
        records = raw.to_list()
        bad = 2 if is_list else 3
        buf = io.BytesIO()
        (ds[bad]["image"][0] if is_list else ds[bad]["image"]).save(buf, format="PNG")
        cut = {"bytes": buf.getvalue()[: len(buf.getvalue()) // 2], "path": None}
        if is_list:
            records[bad]["image"] = [cut]
        else:
            records[bad]["image"] = cut
        fixed = datasets.Dataset.from_list(records, features=raw.features).cast(ds.features)
        shutil.rmtree(path)
        datasets.DatasetDict({"test": fixed}).save_to_disk(str(path))


@pytest.mark.slow
def test_tasks_write_nothing_into_the_mirror_and_verify_finds_truncated_images(tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    _damaged_mirror(mirror)
    monkeypatch.setenv("LMMS_AC_DATASETS", str(mirror))
    before = snapshot(mirror)
    import lmms_eval.models  # noqa: F401  (installs the plugin hooks, as the CLI does)
    from lmms_eval.tasks import TaskManager, get_task_dict

    tasks = get_task_dict(["seed", "mme"], TaskManager(verbosity="ERROR"))
    assert len(tasks["seed"].test_docs()) == 6  # video questions filtered out
    assert snapshot(mirror) == before  # no cache file next to the copy (seed filters in memory)

    assert main(["datasets", "mme", "seed", "--verify"]) == 1
    out = capsys.readouterr().out
    bad = [line.split("\t") for line in out.splitlines() if line.startswith("BAD\t")]
    assert [(b[1], b[2]) for b in bad] == [("mme", "doc_id=3"), ("seed", "doc_id=2")], out
    assert "question_id=" in bad[0][3] and "image[0]" == bad[1][4]
    assert "truncated" in out.lower() or "broken" in out.lower()
    assert snapshot(mirror) == before


# ------------------------------------------------------------------ item 13: messages that name the problem
@pytest.mark.slow
def test_missing_mirror_directory_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("LMMS_AC_DATASETS", str(tmp_path / "typo"))
    import lmms_eval.models  # noqa: F401
    from lmms_eval.tasks import TaskManager, get_task_dict

    with pytest.raises(FileNotFoundError, match=r"LMMS_AC_DATASETS names .*typo, which is not a directory"):
        get_task_dict(["mme"], TaskManager(verbosity="ERROR"))


@pytest.mark.slow
def test_offline_dataset_without_copy_names_where_it_looked(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("LMMS_AC_DATASETS", str(mirror))
    tasks = _missing_task(tmp_path)
    import lmms_eval.models  # noqa: F401
    from lmms_eval.tasks import TaskManager, get_task_dict

    with pytest.raises(
        FileNotFoundError, match=r"no local copy \(looked for .*mirror/.*no-such-hub-repo.*lmms-ac mirror"
    ):
        get_task_dict(["hardening_gone"], TaskManager(verbosity="ERROR", include_path=tasks))


@pytest.mark.slow
def test_failed_mirror_leaves_no_empty_folder(tmp_path, capsys):
    tasks = _missing_task(tmp_path)
    target = tmp_path / "new" / "mirror"
    assert main(["mirror", "hardening_gone", "--to", str(target), "--include-path", tasks]) == 2
    assert "cannot download" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
