"""Mutual k-NN alignment: planted answers and the layers-knn command."""

from __future__ import annotations

import json

import pytest
import torch

from lmms_ac.cli import main
from lmms_ac.layers.knn import caption_features, mutual_knn, read_docci
from lmms_ac.scores.store import read_scores


def test_rotation_gives_one_and_independent_spaces_give_k_over_n():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(300, 16, generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    assert mutual_knn(u, u @ q, k=10) == pytest.approx(1.0)
    assert mutual_knn(u, 3.0 * u @ q, k=10) == pytest.approx(1.0)  # cosine: scale does not matter
    values = [mutual_knn(torch.randn(300, 16, generator=g), torch.randn(300, 24, generator=g), k=10) for _ in range(5)]
    expected = 10 / 299
    assert abs(sum(values) / len(values) - expected) < 0.01, (values, expected)


def test_hand_computed_overlap():
    def at(degrees):
        r = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
        return torch.stack([r.cos(), r.sin()], 1)

    # nearest neighbour by angle: u 0->1, 1->0, 2->1, 3->2; v 0->1, 1->2, 2->1, 3->2: 3 of 4 agree
    assert mutual_knn(at([0, 10, 30, 60]), at([0, 50, 60, 90]), k=1) == pytest.approx(0.75)


def test_bad_k():
    with pytest.raises(ValueError, match="k must be in 1..N-1"):
        mutual_knn(torch.zeros(5, 2), torch.zeros(5, 2), k=5)
    with pytest.raises(ValueError, match="paired"):
        mutual_knn(torch.zeros(5, 2), torch.zeros(4, 2), k=1)


def test_caption_features_ignore_padding_and_bos(llava_hf_dir):
    from transformers import AutoTokenizer, LlavaForConditionalGeneration

    from lmms_ac.vlm.loaders import _causal_lm_around

    model = LlavaForConditionalGeneration.from_pretrained(llava_hf_dir)
    llm = _causal_lm_around(model.config.text_config, model.model.language_model, model.lm_head).eval()
    tok = AutoTokenizer.from_pretrained(llava_hf_dir)
    caps = ["a cat", "a red car on the road with two people"]
    batched = caption_features(llm, tok, caps, [0, 2], batch_size=2, progress=False)
    for i, c in enumerate(caps):
        alone = caption_features(llm, tok, [c], [0, 2], batch_size=1, progress=False)
        for layer in (0, 2):
            torch.testing.assert_close(batched[layer][i], alone[layer][0], rtol=1e-4, atol=1e-5)
    ids = tok(caps[0])["input_ids"]
    emb = llm.get_input_embeddings().weight[ids[1:]].mean(0)  # BOS excluded
    torch.testing.assert_close(batched[0][0], emb.detach(), rtol=1e-5, atol=1e-6)


def test_read_docci(tmp_path):
    (tmp_path / "images").mkdir()
    lines = [
        {"example_id": "a1", "split": "train", "image_file": "a1.jpg", "description": "A dog."},
        {"example_id": "b2", "split": "test", "image_file": "b2.jpg", "description": "A cat."},
    ]
    (tmp_path / "docci_descriptions.jsonlines").write_text("\n".join(json.dumps(x) for x in lines))
    pairs = read_docci(str(tmp_path), split="test")
    assert [(p.id, p.image_path.name, p.caption) for p in pairs] == [("b2", "b2.jpg", "A cat.")]
    (tmp_path / "bad.jsonlines").write_text('{"id": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonlines:1"):
        read_docci(str(tmp_path / "bad.jsonlines"))


def test_layers_knn_command_base_equals_mllm_when_weights_match(llava_hf_dir, original_dirs, tmp_path, capsys):
    from lmms_ac.testing.datasets import write_llava_pretrain

    data = write_llava_pretrain(str(tmp_path / "558k"), n=12)
    out = tmp_path / "scores.csv"
    base = original_dirs["stage1"]["base_llm"]  # the tiny MLLM's own LLM weights, saved as a plain Llama
    argv = [
        "layers-knn",
        "--model",
        llava_hf_dir,
        "--data",
        "llava558k",
        "--captions",
        data["captions"],
        "--images",
        data["images"],
        "--base-llm",
        base,
        "--k",
        "3",
        "--n",
        "12",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
        "--variant",
        "tiny",
        "--json",
        "--plot",
        str(tmp_path / "f"),
    ]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["mllm"]) == {"0", "1", "2"}
    assert doc["base"] == pytest.approx(doc["mllm"])  # same weights: same curve
    assert all(0 <= v <= 1 for v in doc["mllm"].values())
    assert doc["chance"] == pytest.approx(3 / 11)
    names = {r["score"] for r in read_scores(out)}
    assert names == {"knn@L0", "knn@L1", "knn@L2", "knn_base@L0", "knn_base@L1", "knn_base@L2"}
    assert (tmp_path / "f" / "knn_tiny.png").exists()
    assert main(argv[:-2] + ["--k", "12"]) == 2
    assert "--k" in capsys.readouterr().err
