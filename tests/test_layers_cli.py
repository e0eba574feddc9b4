"""lmms-ac layers on a tiny llava-hf checkpoint loaded exactly as lmms_ac_llava loads it."""

from __future__ import annotations

import json

import pytest

from lmms_ac.cli import main
from lmms_ac.scores.store import read_scores
from lmms_ac.testing.spair import write_photo_fixture


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("spair_layers_cli")
    write_photo_fixture(root, photos=(("chelsea", "cat"), ("coffee", "cup")))
    return root


def test_layers_command_writes_scores_json_and_figure(llava_hf_dir, photo_root, tmp_path, capsys, monkeypatch):
    out, figs = tmp_path / "scores.csv", tmp_path / "figs"
    argv = [
        "layers",
        "--model",
        llava_hf_dir,
        "--spair",
        str(photo_root),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--batch-size",
        "3",
    ]
    assert main(argv + ["--json", "--plot", str(figs), "--variant", "tiny"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_layers"] == 2 and doc["layers"] == [0, 1, 2]
    assert set(doc["c"]) == {"0", "1", "2"} and set(doc["attn_img"]) == {"1", "2"}
    assert 0 <= doc["attn_img"]["1"] <= 1 and -1 <= doc["recon"]["2"] <= 1
    assert doc["provenance"]["config_hash"]
    rows = read_scores(out)
    names = {r["score"] for r in rows}
    assert names == {"C@enc", "C@L0", "C@L1", "C@L2", "recon@L0", "recon@L1", "recon@L2", "attn_img@L1", "attn_img@L2"}
    assert {r["variant"] for r in rows} == {"tiny"}
    by_name = {r["score"]: float(r["value"]) for r in rows}
    assert by_name["C@L1"] == pytest.approx(doc["c"]["1"])
    assert (figs / "layers_tiny.png").stat().st_size > 1000 and (figs / "layers_tiny.svg").exists()

    # same config again, a layer subset: answered from the store without loading the model; nothing duplicated
    import lmms_ac.layers.probe_run as probe_run

    real_load = probe_run.load_model
    monkeypatch.setattr(probe_run, "load_model", lambda checkpoint: pytest.fail("the model was loaded"))
    assert main(argv + ["--variant", "tiny", "--layers", "0,-1", "--no-attention", "--no-recon"]) == 0
    text = capsys.readouterr().out
    assert "already in" in text and "layer\tC@L" in text and f"{by_name['C@L2']:.2f}" in text
    assert main(argv + ["--variant", "tiny", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["c"] == pytest.approx(doc["c"]) and again["attn_img"] == pytest.approx(doc["attn_img"])
    assert again["c_chance"] == pytest.approx(doc["c_chance"]) and len(again["skipped"]) == 9
    assert len(read_scores(out)) == len(rows)
    monkeypatch.setattr(probe_run, "load_model", real_load)
    # a new metric setting is computed (alpha changes the config): rows are added
    assert main(argv + ["--variant", "tiny", "--alpha", "0.2", "--no-recon", "--no-attention", "--layers", "0"]) == 0
    assert "2 score rows appended" in capsys.readouterr().out
    assert len(read_scores(out)) == len(rows) + 2
    # the figure is not silently replaced
    assert main(argv + ["--variant", "tiny", "--plot", str(figs), "--no-recon", "--no-attention"]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layers", "9"], "outside 0..2"),
        (["--alpha", "0"], "--alpha must be > 0"),
        (["--no-c", "--no-recon", "--no-attention"], "nothing to compute"),
        (["--split", "tset"], "unknown SPair split"),
        (["--prompts-file", "/nonexistent.txt"], "does not exist"),
    ],
)
def test_layers_bad_input(llava_hf_dir, photo_root, tmp_path, capsys, extra, message):
    argv = [
        "layers",
        "--model",
        llava_hf_dir,
        "--spair",
        str(photo_root),
        "--out",
        str(tmp_path / "s.csv"),
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err


def test_prompts_file_reads_text_and_jsonl(tmp_path):
    from lmms_ac.layers.prompts import read_prompts

    (tmp_path / "p.txt").write_text("What is this?\n\nHow many cats?\n")
    (tmp_path / "p.jsonl").write_text('{"question": "<image>\\nWhich color?"}\n{"text": "Name it."}\n')
    assert read_prompts(None, str(tmp_path / "p.txt")) == ["What is this?", "How many cats?"]
    assert read_prompts(["A"], str(tmp_path / "p.jsonl")) == ["A", "Which color?", "Name it."]
    (tmp_path / "bad.jsonl").write_text('{"answer": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_prompts(None, str(tmp_path / "bad.jsonl"))


@pytest.mark.slow
def test_layers_attention_on_a_task_s_questions(llava_hf_dir, photo_root, mirror_dir, tmp_path, monkeypatch, capsys):
    from lmms_ac.layers.prompts import task_prompts

    monkeypatch.setenv("LMMS_AC_DATASETS", mirror_dir)
    prompts = task_prompts("mme", 3)
    assert len(prompts) == 3 and all("<image>" not in p and p for p in prompts)
    argv = [
        "layers",
        "--model",
        llava_hf_dir,
        "--spair",
        str(photo_root),
        "--out",
        str(tmp_path / "s.csv"),
        "--device",
        "cpu",
        "--no-progress",
        "--task",
        "mme",
        "--task-limit",
        "3",
        "--no-c",
        "--no-recon",
        "--json",
    ]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["task"] == "mme" and doc["config"]["prompts"] == prompts
    assert set(doc["attn_img"]) == {"1", "2"} and doc["c"] == {} and doc["recon"] == {}
    with pytest.raises(ValueError, match="did you mean"):
        task_prompts("mmee", 3)


def test_layers_on_an_image_folder_gives_recon_and_attention_only(llava_hf_dir, photo_root, tmp_path, capsys):
    out = tmp_path / "s.csv"
    argv = [
        "layers",
        "--model",
        llava_hf_dir,
        "--images",
        str(photo_root / "JPEGImages"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--layers",
        "0,2",
        "--limit",
        "8",
        "--json",
    ]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_images"] == 8 and doc["c"] == {} and set(doc["recon"]) == {"0", "2"} and set(doc["attn_img"]) == {"2"}
    assert {r["score"] for r in read_scores(out)} == {"recon@L0", "recon@L2", "attn_img@L2"}
    with pytest.raises(SystemExit):  # one image source only
        main(argv + ["--spair", str(photo_root)])
    assert "not allowed with" in capsys.readouterr().err
