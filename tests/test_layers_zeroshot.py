"""Zero-shot recognition: generated lmms-eval classification tasks and the encoder's CLIP-style zero-shot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmms_ac.cli import main
from lmms_ac.layers.zeroshot import (
    DEFAULT_PROMPT,
    class_prompt_name,
    parse_source,
    prepare_task,
    process_results,
    subsample,
)
from lmms_ac.scores.store import read_scores
from lmms_ac.testing.tiny_layers import make_tiny_clip, write_classification_folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    return write_classification_folder(str(tmp_path_factory.mktemp("zs_folder")))


@pytest.fixture(scope="module")
def prepared(image_folder, tmp_path_factory):
    to = tmp_path_factory.mktemp("zs_tasks")
    info = prepare_task("tiny", str(image_folder), str(to), n=6, seed=0)
    return to, info


def test_prepare_task_saves_a_seeded_subset_and_a_loadable_yaml(prepared):
    import datasets
    from lmms_eval.utils import load_yaml_config

    to, info = prepared
    assert info["task"] == "zeroshot_tiny" and info["n"] == 6 and info["classes"] == 3
    data = datasets.load_from_disk(str(to / "tiny"))["test"]
    assert data.features["label"].names == ["cat", "dog", "red car"]
    assert data["source_index"] == subsample(9, 6, 0)
    cfg = load_yaml_config(str(to / "zeroshot_tiny.yaml"))
    assert cfg["task"] == "zeroshot_tiny" and cfg["output_type"] == "multiple_choice"
    assert cfg["doc_to_choice"] == ["cat", "dog", "red car"] and cfg["doc_to_text"] == DEFAULT_PROMPT
    assert cfg["dataset_path"] == str((to / "tiny").resolve()) and cfg["dataset_kwargs"] == {"load_from_disk": True}
    doc = data[0]
    assert cfg["doc_to_visual"](doc)[0].mode == "RGB"
    # regenerating the same task needs --overwrite
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare_task("tiny", str(to / "tiny"), str(to), n=6)


def test_overwrite_replaces_only_a_set_it_saved(tmp_path, image_folder):
    """--overwrite regenerates a set zeroshot-tasks saved; a folder of the user's with the set's name is refused,
    never deleted."""
    to = tmp_path / "tasks"
    prepare_task("tiny", str(image_folder), str(to), n=3, seed=0)
    assert prepare_task("tiny", str(image_folder), str(to), n=4, seed=1, overwrite=True)["n"] == 4
    mine = to / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"not a dataset")
    with pytest.raises(ValueError, match="not a zero-shot set saved by zeroshot-tasks"):
        prepare_task("photos", str(image_folder), str(to), n=3, overwrite=True)
    assert (mine / "holiday.jpg").read_bytes() == b"not a dataset"


def test_process_results_takes_the_most_likely_class():
    # lmms_ac_llava returns log-probabilities: higher is better (lmms-eval's default argmin would pick -9.0)
    assert process_results({"label": 1}, [(-5.0, False), (-0.5, True), (-9.0, False)]) == {"acc": 1.0}
    assert process_results({"label": 2}, [(-5.0, False), (-0.5, True), (-9.0, False)]) == {"acc": 0.0}


def test_parse_source_and_names():
    assert parse_source("cifar100") == ("cifar100", "uoft-cs/cifar100", "test")
    assert parse_source("mine=/data/x@val") == ("mine", "/data/x", "val")
    assert class_prompt_name("golden__retriever") == "golden retriever"
    with pytest.raises(ValueError, match="did you mean 'cifar100'"):
        parse_source("cifar10O")
    with pytest.raises(ValueError, match="country211=<image folder>"):
        parse_source("country211")
    with pytest.raises(ValueError, match="lower-case"):
        parse_source("My Set=/x")


def test_zeroshot_tasks_command_and_missing_columns(image_folder, tmp_path, capsys):
    assert main(["zeroshot-tasks", f"pets2={image_folder}", "--to", str(tmp_path), "--n", "4"]) == 0
    assert "--include_path" in capsys.readouterr().out
    assert (tmp_path / "zeroshot_pets2.yaml").exists()
    assert main(["zeroshot-tasks", f"bad={image_folder}", "--to", str(tmp_path), "--label-column", "nope"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err


def test_encoder_zero_shot_equals_a_hand_computation(prepared, tmp_path, capsys):
    import datasets
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    to, _ = prepared
    clip = make_tiny_clip(str(tmp_path / "clip"))
    templates = ["a photo of a {}.", "a picture of the {}"]
    out = tmp_path / "scores.csv"
    argv = [
        "zeroshot-encoder",
        f"tiny={to / 'tiny'}",
        "--encoder",
        clip,
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
        "--json",
        "--batch-size",
        "4",
    ] + [a for t in templates for a in ("--template", t)]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)["results"]["tiny"]

    model, tok, proc = (
        CLIPModel.from_pretrained(clip).eval(),
        AutoTokenizer.from_pretrained(clip),
        AutoImageProcessor.from_pretrained(clip),
    )
    data = datasets.load_from_disk(str(to / "tiny"))["test"]
    names = data.features["label"].names
    with torch.no_grad():

        def unit(x):
            x = x if torch.is_tensor(x) else x.pooler_output
            return x / x.norm(dim=-1, keepdim=True)

        text = []
        for c in names:
            t = unit(
                model.get_text_features(**tok([tp.format(c) for tp in templates], padding=True, return_tensors="pt"))
            )
            text.append(unit(t.mean(0)))
        img = unit(
            model.get_image_features(
                pixel_values=proc(images=[im.convert("RGB") for im in data["image"]], return_tensors="pt")[
                    "pixel_values"
                ]
            )
        )
        pred = (img @ torch.stack(text).T).argmax(-1).tolist()
    expected = 100.0 * np.mean([p == y for p, y in zip(pred, data["label"])])
    assert got["accuracy"] == pytest.approx(expected) and got["n"] == 6
    rows = read_scores(out)
    assert [r["score"] for r in rows] == ["zeroshot_enc:tiny"] and float(rows[0]["value"]) == pytest.approx(expected)
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["results"]["tiny"]["skipped"]


def test_encoder_without_text_tower_is_refused(llava_hf_dir, original_dirs, prepared, capsys):
    from lmms_ac.layers.zeroshot import load_text_image_model

    with pytest.raises(ValueError, match="no text tower"):
        load_text_image_model(llava_hf_dir)
    to, _ = prepared
    # --model: an original checkpoint's own tower (here a vision-only CLIP tower); a llava-hf one names none
    assert (
        main(
            [
                "zeroshot-encoder",
                f"tiny={to / 'tiny'}",
                "--model",
                original_dirs["full"]["checkpoint"],
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "no text tower" in capsys.readouterr().err
    assert main(["zeroshot-encoder", f"tiny={to / 'tiny'}", "--model", llava_hf_dir, "--device", "cpu"]) == 2
    assert "pass --encoder" in capsys.readouterr().err


@pytest.mark.slow
def test_lmms_eval_accuracy_equals_a_hand_computation(prepared, llava_hf_dir, tmp_path):
    import datasets

    from lmms_ac.vlm.loaders import load_vlm
    from lmms_ac.vlm.prompts import build_prompt, resolve_format

    to, _ = prepared
    import glob
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [
        str(Path(sys.executable).parent / "lmms-eval"),
        "--model",
        "lmms_ac_llava",
        "--model_args",
        f"pretrained={llava_hf_dir},device=cpu",
        "--tasks",
        "zeroshot_tiny",
        "--include_path",
        str(to),
        "--batch_size",
        "4",
        "--output_path",
        str(tmp_path / "out"),
        "--log_samples",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    files = glob.glob(f"{tmp_path}/out/**/*_results.json", recursive=True)
    assert proc.returncode == 0 and files, (proc.stdout + proc.stderr)[-4000:]
    with open(files[0]) as fh:
        acc = json.load(fh)["results"]["zeroshot_tiny"]["acc,none"]
    per_doc = {}
    for path in glob.glob(f"{tmp_path}/out/**/*_samples_zeroshot_tiny.jsonl", recursive=True):
        with open(path) as fh:
            per_doc.update({row["doc_id"]: row["acc"] for row in map(json.loads, fh)})

    vlm = load_vlm(llava_hf_dir, device="cpu")
    prompt = build_prompt(DEFAULT_PROMPT, 1, resolve_format("auto", vlm.tokenizer), vlm.tokenizer)
    data = datasets.load_from_disk(str(to / "tiny"))["test"]
    names = data.features["label"].names
    hits = []
    for doc in data:
        lls = [
            ll
            for ll, _ in vlm.loglikelihood(
                [prompt] * len(names), [" " + c for c in names], [[doc["image"].convert("RGB")]] * len(names)
            )
        ]
        hits.append(int(np.argmax(lls)) == doc["label"])
    assert acc == pytest.approx(float(np.mean(hits)))
    assert [per_doc[i] for i in range(len(hits))] == [float(h) for h in hits]  # doc by doc, not only on average


def test_zeroshot_table_puts_the_mllm_next_to_its_encoder(tmp_path, capsys):
    from lmms_ac.scores.store import append_score

    def results(folder, stamp, model_args, accs):
        path = tmp_path / "results" / folder / f"{stamp}_results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "config": {"model_args": model_args},
                    "results": {f"zeroshot_{k}": {"alias": k, "acc,none": v} for k, v in accs.items()},
                }
            )
        )

    results("a", "20260101_000000", "pretrained=/ckpt/llava-7b,device=cuda", {"cifar100": 0.2, "pets": 0.5})
    results("a", "20260102_000000", "pretrained=/ckpt/llava-7b,device=cuda", {"cifar100": 0.4})  # newer wins
    results("b", "20260101_000000", "pretrained=/x,variant=other", {"pets": 0.1})
    scores = tmp_path / "scores.csv"
    for name, value in (("cifar100", 70.0), ("pets", 90.0), ("food101", 80.0)):
        append_score(
            scores, {"variant": "clip-l", "score": f"zeroshot_enc:{name}", "value": value, "config_hash": name}
        )
    assert main(["zeroshot-table", str(tmp_path / "results"), "--scores", str(scores), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["columns"] == ["MLLM: llava-7b", "MLLM: other", "encoder: clip-l"]
    assert table["values"]["MLLM: llava-7b"] == {"cifar100": pytest.approx(40.0), "pets": pytest.approx(50.0)}
    assert table["shared_sets"] == ["pets"]
    assert table["average"]["encoder: clip-l"] == pytest.approx(90.0)
    assert main(["zeroshot-table", str(tmp_path / "results"), "--scores", str(scores)]) == 0
    text = capsys.readouterr().out
    assert "food101\t-\t-\t80.0" in text and "average (1 shared sets)" in text
    assert main(["zeroshot-table", str(tmp_path / "empty")]) == 2
