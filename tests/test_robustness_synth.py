"""``lmms-ac synthesize`` with a tiny random diffusers pipeline and a tiny random CLIP, both saved to
disk and loaded by the real loading code; the captioner is a plain function named module:function."""

from __future__ import annotations

import json

import pytest

CAPTION_MODULE = """
def caption(images):
    return [f"a {im.size[0]} by {im.size[1]} photograph" for im in images]
"""


def _clip_tokenizer():
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77), vocab


@pytest.fixture(scope="module")
def tiny_t2i(tmp_path_factory) -> str:
    """A tiny StableDiffusionPipeline (random weights) saved with save_pretrained."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer, vocab = _clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=2,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        sample_size=32,
    )
    eos = vocab["<|endoftext|>"]
    text = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=eos,
            pad_token_id=eos,
            hidden_size=8,
            intermediate_size=16,
            num_attention_heads=2,
            num_hidden_layers=1,
            vocab_size=len(vocab),
            projection_dim=8,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing", steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = tmp_path_factory.mktemp("t2i") / "tiny-sd"
    pipe.save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny random CLIPModel + image processor saved with save_pretrained."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "vocab_size": 64,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).save_pretrained(str(path))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(str(path))
    return str(path)


@pytest.fixture
def synth_env(tmp_path, monkeypatch, mirror_dir):
    (tmp_path / "tiny_caption.py").write_text(CAPTION_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LMMS_AC_DATASETS", mirror_dir)
    monkeypatch.setenv("LMMS_AC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LMMS_AC_SYNTHETIC", raising=False)
    monkeypatch.delenv("LMMS_AC_PROBES", raising=False)
    import lmms_eval.models  # noqa: F401  (the TaskManager hook: LMMS_AC_DATASETS mirrors, lmms-ac tasks)

    return tmp_path


@pytest.mark.slow
def test_synthesize_writes_images_captions_and_clip_similarity(synth_env, tiny_t2i, tiny_clip, capsys):
    import datasets

    from lmms_ac.cli import main
    from lmms_ac.robustness import synthesis as S
    from lmms_ac.robustness.synthetic_store import load_store

    out = synth_env / "synthetic"
    argv = [
        "synthesize",
        "mme",
        "--to",
        str(out),
        "--captioner",
        "tiny_caption:caption",
        "--t2i",
        tiny_t2i,
        "--clip",
        tiny_clip,
        "--steps",
        "2",
        "--size",
        "32",
        "--limit",
        "6",
        "--device",
        "cpu",
        "--batch-size",
        "2",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"export LMMS_AC_SYNTHETIC={out}" in printed and "6 documents\t3 images" in printed

    ds = datasets.load_from_disk(str(out / "mme"))
    assert len(ds) == 3 and ds["doc_ids"] == [[0, 1], [2, 3], [4, 5]]  # two MME questions per image
    assert all(c.startswith("a ") and c.endswith(" photograph") for c in ds["caption"])
    assert all(im.size == (32, 32) for im in ds["image"])
    assert all(-1.0 <= s <= 1.0 for s in ds["clip_similarity"]) and len(set(ds["clip_similarity"])) == 3
    info = json.loads((out / "mme" / "synthesis.json").read_text())
    assert info["limit"] == 6 and info["steps"] == 2 and info["t2i"] == tiny_t2i and info["clip"] == tiny_clip
    assert info["images"] == 3 and abs(info["clip_similarity"]["mean"] - sum(ds["clip_similarity"]) / 3) < 1e-6
    assert info["provenance"]["config_hash"]

    # the similarity is the tiny CLIP's cosine of source vs synthetic
    source = _mme_images()
    sim = S.ClipSimilarity(tiny_clip, device="cpu")
    assert abs(sim([source[0]], [ds[0]["image"]])[0] - ds[0]["clip_similarity"]) < 1e-4

    # the synthetic task's lookup: by image content, an unsynthesized image is an error naming the command
    store = load_store("mme", root=out)
    assert store.lookup(source[0]).tobytes() == ds[0]["image"].convert("RGB").tobytes()
    with pytest.raises(KeyError, match=r"lmms-ac synthesize mme --to"):
        store.lookup(source[7], "mme_synthetic")

    # an existing set is never overwritten silently; --overwrite regenerates the same images (seeded)
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    again = datasets.load_from_disk(str(out / "mme"))
    assert [im.tobytes() for im in again["image"]] == [im.tobytes() for im in ds["image"]]


_MME = {}


def _mme_images():
    """The MME test images in task order, as mme's doc_to_visual returns them."""
    if not _MME:
        import os

        import datasets

        from lmms_ac.local_datasets import find_local_copy

        path = find_local_copy("lmms-lab-encoder/MME")
        assert path is not None, os.environ.get("LMMS_AC_DATASETS")
        _MME["images"] = [row["image"].convert("RGB") for row in datasets.load_from_disk(str(path))["test"]]
    return _MME["images"]


def test_synthetic_root_must_be_set(monkeypatch):
    from PIL import Image

    from lmms_ac.robustness.synthetic_store import synthetic_visuals

    monkeypatch.delenv("LMMS_AC_SYNTHETIC", raising=False)
    with pytest.raises(FileNotFoundError, match=r"LMMS_AC_SYNTHETIC is not set.*lmms-ac synthesize seed --to DIR"):
        synthetic_visuals("seed", [Image.new("RGB", (4, 4))], task="seed_synthetic")
    assert synthetic_visuals("seed", [], task="seed_synthetic") == []  # no image, nothing to swap


def test_default_captioner_class_loads_a_saved_blip(tmp_path):
    """HFCaptioner (the default captioner's code path) on a tiny random BLIP saved to disk."""
    import torch
    from PIL import Image
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    from lmms_ac.robustness.synthesis import HFCaptioner, make_captioner

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "dog", "the"]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    tok.add_special_tokens({"bos_token": "[DEC]"})
    torch.manual_seed(0)
    text = {
        "vocab_size": len(tok),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "encoder_hidden_size": 16,
        "bos_token_id": tok.convert_tokens_to_ids("[DEC]"),
        "sep_token_id": 3,
        "pad_token_id": 0,
    }
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_attention_heads": 2,
        "num_hidden_layers": 1,
        "image_size": 32,
        "patch_size": 8,
    }
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(
        tmp_path
    )
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(
        tmp_path
    )

    captioner = make_captioner(str(tmp_path), device="cpu", max_new_tokens=4, prompt="a photo of")
    assert isinstance(captioner, HFCaptioner)
    captions = captioner([Image.new("RGB", (40, 30), (200, 0, 0)), Image.new("L", (20, 20))])
    assert len(captions) == 2 and all(c.startswith("a photo of") for c in captions)
