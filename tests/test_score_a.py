"""A score: the paper's mean caption-token log-likelihood, checked by hand; the embed variant; the CLI."""

from __future__ import annotations

import csv

import pytest
import torch

from lmms_ac.cli import main
from lmms_ac.scores.alignment import embedding_alignment, read_llava_pretrain, sample_pairs, score_a
from lmms_ac.testing.datasets import write_llava_pretrain


@pytest.fixture(scope="module")
def pretrain(tmp_path_factory):
    return write_llava_pretrain(str(tmp_path_factory.mktemp("558k")), n=6)


def test_a_equals_hand_computed_mean_logprob(llava_hf_dir, pretrain):
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from lmms_ac.vlm.loaders import load_vlm

    vlm = load_vlm(llava_hf_dir)
    res = score_a(vlm, pretrain["captions"], pretrain["images"], n=4, seed=1, batch_size=3)
    model = LlavaForConditionalGeneration.from_pretrained(llava_hf_dir).eval()
    processor = AutoProcessor.from_pretrained(llava_hf_dir)
    pairs = sample_pairs(read_llava_pretrain(pretrain["captions"], pretrain["images"]), 4, 1)
    expected = []
    for p in pairs:
        from PIL import Image

        image = Image.open(p.image_path).convert("RGB")
        full = processor(text=["<image>" + p.caption], images=[image], return_tensors="pt")
        n_ctx = processor(text=["<image>"], images=[image], return_tensors="pt")["input_ids"].shape[1]
        with torch.no_grad():
            lp = torch.log_softmax(model(**full).logits[0].float(), -1)
        ids = full["input_ids"][0]
        token_lps = [float(lp[t - 1, ids[t]]) for t in range(n_ctx, len(ids))]
        expected.append(sum(token_lps) / len(token_lps))
        assert res["per_pair"][p.id] == pytest.approx(expected[-1], abs=1e-4)
    assert res["value"] == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    assert res["n"] == 4


def test_sampling_is_seeded(pretrain):
    pairs = read_llava_pretrain(pretrain["captions"], pretrain["images"])
    assert sample_pairs(pairs, 3, 7) == sample_pairs(pairs, 3, 7)
    assert sample_pairs(pairs, 3, 7) != sample_pairs(pairs, 3, 8)


def test_embed_variant_is_one_against_itself(llava_hf_vlm, pretrain):
    from PIL import Image

    images = [Image.open(p.image_path) for p in read_llava_pretrain(pretrain["captions"], pretrain["images"])[:3]]
    assert embedding_alignment(llava_hf_vlm, [llava_hf_vlm], images) == pytest.approx(1.0, abs=1e-5)


def test_cli_appends_and_skips(llava_hf_dir, original_dirs, pretrain, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    args = [
        "score-a",
        "--pretrained",
        llava_hf_dir,
        "--captions",
        pretrain["captions"],
        "--images",
        pretrain["images"],
        "--n",
        "3",
        "--out",
        str(out),
        "--variant",
        "tiny",
    ]
    assert main(args) == 0
    stage1 = original_dirs["stage1"]
    assert (
        main(
            [
                "score-a",
                "--pretrained",
                stage1["checkpoint"],
                "--model-base",
                stage1["base_llm"],
                "--captions",
                pretrain["captions"],
                "--images",
                pretrain["images"],
                "--n",
                "3",
                "--out",
                str(out),
                "--variant",
                "tiny-stage1",
            ]
        )
        == 0
    )
    assert main(args) == 0  # rerun: skipped, nothing lost
    rows = list(csv.DictReader(open(out)))
    assert [(r["variant"], r["score"]) for r in rows] == [("tiny", "A"), ("tiny-stage1", "A")]
    assert "already in" in capsys.readouterr().out


def test_cli_bad_input(tmp_path, llava_hf_dir):
    assert main(["score-a", "--pretrained", llava_hf_dir, "--out", str(tmp_path / "s.csv")]) == 2
    assert (
        main(
            [
                "score-a",
                "--pretrained",
                llava_hf_dir,
                "--captions",
                str(tmp_path / "none.json"),
                "--images",
                str(tmp_path),
                "--out",
                str(tmp_path / "s.csv"),
            ]
        )
        == 2
    )
