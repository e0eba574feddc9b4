"""Checkpoints laid out as they were released (lmms_ac/testing/released.py, layouts a-e) load, tokenize as
SentencePiece does, and run through score-a and layers; configs that cannot work fail at once, naming the file.
The real lmms-eval CLI on each layout is in test_released_layouts_cli.py (slow)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from lmms_ac.cli import main
from lmms_ac.testing.released import LAYOUTS, TOWER_ID, build_hf_cache, build_layout
from lmms_ac.vlm.loaders import CheckpointError, checkpoint_format, load_vlm

ORIGINAL = [name for name in LAYOUTS if name != "d"]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    build_hf_cache(str(root / "hf"))
    return {"root": root, "hf_home": root / "hf", **{name: build_layout(str(root), name) for name in LAYOUTS}}


@pytest.fixture
def hub_cache(released, monkeypatch):
    """The fixture's HF cache is where hub ids resolve (offline: conftest sets HF_HUB_OFFLINE)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(released["hf_home"] / "hub"))
    return released


def _load(layout: dict, **kwargs):
    return load_vlm(layout["checkpoint"], model_base=layout.get("model_base"), **kwargs)


def _image(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((40, 52, 3)) * 255).astype("uint8"))


def _stored_tensors(layout: dict) -> dict:
    from pathlib import Path

    from safetensors.torch import load_file

    tensors = {}
    for folder in filter(None, (layout["checkpoint"], layout.get("model_base"))):
        for f in sorted(Path(folder).iterdir()):
            if f.suffix == ".safetensors":
                tensors.update(load_file(str(f)))
            elif f.suffix == ".bin":
                tensors.update(torch.load(f, weights_only=True))
    return tensors


def _config(layout: dict) -> dict:
    with open(f"{layout['checkpoint']}/config.json") as fh:
        return json.load(fh)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_each_released_layout_loads_and_generates(hub_cache, name):
    layout = hub_cache[name]
    assert checkpoint_format(_config(layout)) == ("llava_hf" if name == "d" else "original")
    vlm = _load(layout)
    if name != "d":
        assert TOWER_ID in vlm.vision.spec  # the hub id in mm_vision_tower, read from the HF cache
        assert vlm.prompt_tokenizer.mode == "chunked"
    else:
        assert vlm.prompt_tokenizer.mode == "joint"
    assert vlm.image_aspect_ratio == ("original" if name in ("d", "e") else "pad")
    # the weights are the files' (not a fresh init under other key names)
    stored = _stored_tensors(layout)
    embed = "language_model.model.embed_tokens.weight" if name == "d" else "model.embed_tokens.weight"
    first = "multi_modal_projector.linear_1.weight" if name == "d" else "model.mm_projector.0.weight"
    if name == "e":
        first = "model.mm_projector.weight"
    assert torch.equal(vlm.llm.get_input_embeddings().weight, stored[embed])
    linear = next(m for m in vlm.projector.modules() if isinstance(m, torch.nn.Linear))
    assert torch.equal(linear.weight, stored[first])
    prompt = "USER: <image>\nWhat is in the image? ASSISTANT:"
    (text,) = vlm.generate([prompt], [[_image()]], max_new_tokens=4)
    assert isinstance(text, str)


@pytest.mark.parametrize("name", ORIGINAL)
def test_original_layouts_give_sentencepiece_ids_around_images(hub_cache, name):
    import sentencepiece

    layout = hub_cache[name]
    vlm = _load(layout)
    source = layout.get("model_base") or layout["checkpoint"]
    sp = sentencepiece.SentencePieceProcessor(model_file=f"{source}/tokenizer.model")
    image_id = vlm.image_token_id
    before, after = "A chat. USER: ", " What is in the image?\n ASSISTANT:"
    ids = vlm.prompt_tokenizer.encode(before + "<image>" + after)
    if name == "e":  # <im_start><image><im_end>: added tokens around the placeholder
        start, end = (vlm.tokenizer.convert_tokens_to_ids(t) for t in ("<im_start>", "<im_end>"))
        # the text after <im_end> is its own SentencePiece segment (transformers 4's legacy tokenizer of that era)
        assert ids == [1, *sp.encode(before), start, image_id, end, *sp.encode(after)]
    else:
        assert ids == [1, *sp.encode(before), image_id, *sp.encode(after)]


def test_llava_1_5_as_released_equals_the_llava_llama_twin(hub_cache):
    """Layouts a (model_type llava) and b (llava_llama) hold the same weights: same answers and logits."""
    a, b = _load(hub_cache["a"]), _load(hub_cache["b"])
    prompts = ["USER: <image>\nWhat is it? ASSISTANT:", "USER: <image> Describe. ASSISTANT:"]
    images = [[_image(1)], [_image(2)]]
    assert a.generate(prompts, images, max_new_tokens=6) == b.generate(prompts, images, max_new_tokens=6)


@pytest.mark.parametrize("name", ORIGINAL)
def test_shared_prefixes_change_nothing_on_original_layouts(hub_cache, name):
    """Prefix sharing (packed suffixes, cascade attention) on checkpoints as released, SentencePiece prompts
    and all: greedy text identical to sharing off, loglikelihoods to 1e-5, one prefill per image."""
    from tiny_requests import generate_requests, loglikelihood_requests, tiny_model

    from lmms_ac.testing.prefix_data import mme_many_questions

    layout = hub_cache[name]
    docs = mme_many_questions(2, 6)  # questions of different lengths: the packed suffixes differ in length
    extra = {"model_base": layout["model_base"]} if layout.get("model_base") else {}
    on = tiny_model(layout["checkpoint"], docs, True, 4, **extra)
    off = tiny_model(layout["checkpoint"], docs, False, 4, **extra)
    assert on.prefix_runner.cascade and on.prefix_runner.pack_suffixes
    assert on.generate_until(generate_requests(docs, 5)) == off.generate_until(generate_requests(docs, 5))
    assert on.prefix_runner.stats.prefixes_computed == 2
    on_ll, off_ll = on.loglikelihood(loglikelihood_requests(docs)), off.loglikelihood(loglikelihood_requests(docs))
    assert [g for _, g in on_ll] == [g for _, g in off_ll]
    assert max(abs(a - b) for (a, _), (b, _) in zip(on_ll, off_ll)) <= 1e-5


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_score_a_on_each_layout(hub_cache, name, tmp_path):
    from lmms_ac.scores.store import read_scores
    from lmms_ac.testing.datasets import write_llava_pretrain

    pretrain = write_llava_pretrain(str(tmp_path / "558k"), n=4)
    layout = hub_cache[name]
    out = tmp_path / "scores.csv"
    argv = ["score-a", "--pretrained", layout["checkpoint"], "--captions", pretrain["captions"]]
    argv += ["--images", pretrain["images"], "--n", "3", "--out", str(out), "--variant", name]
    if layout.get("model_base"):
        argv += ["--model-base", layout["model_base"]]
    assert main(argv) == 0
    (row,) = read_scores(out)
    assert row["score"] == "A" and np.isfinite(float(row["value"])) and float(row["value"]) < 0


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layers_on_each_layout(hub_cache, name, tmp_path, capsys):
    from lmms_ac.testing.spair import write_photo_fixture

    photos = tmp_path / "spair"
    write_photo_fixture(photos, photos=(("chelsea", "cat"), ("coffee", "cup")))
    layout = hub_cache[name]
    argv = ["layers", "--model", layout["checkpoint"], "--spair", str(photos), "--out", str(tmp_path / "s.csv")]
    argv += ["--device", "cpu", "--no-progress", "--json", "--variant", name]
    if layout.get("model_base"):
        argv += ["--model-base", layout["model_base"]]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["layers"] == [0, 1, 2] and set(doc["c"]) == {"0", "1", "2"}


# ------------------------------------------------------------------ configs that cannot work fail at once


def _variant(hub_cache, tmp_path, name: str, edit) -> str:
    target = tmp_path / f"{name}-edited"
    shutil.copytree(hub_cache[name]["checkpoint"], target)
    config = json.loads((target / "config.json").read_text())
    edit(config)
    (target / "config.json").write_text(json.dumps(config))
    return str(target)


@pytest.mark.parametrize(
    "config,message",
    [
        ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "fits neither checkpoint format"),
        ({"model_type": "llava"}, r"model_type 'llava', architectures \[\], no mm_\* fields"),
        ({"model_type": "llava_next_video", "vision_config": {}, "text_config": {}}, "LLaVA-NeXT-Video checkpoint"),
        ({"model_type": "qwen2_vl", "vision_config": {}, "text_config": {}}, "not llava-hf's LLaVA"),
    ],
)
def test_format_detection_names_what_it_found(config, message):
    with pytest.raises(CheckpointError, match=message):
        checkpoint_format(config, "ckpt/config.json")


def test_content_not_model_type_decides_the_format():
    assert checkpoint_format({"model_type": "llava", "architectures": ["LlavaLlamaForCausalLM"]}) == "original"
    assert checkpoint_format({"model_type": "llava", "mm_vision_tower": "x"}) == "original"
    assert (
        checkpoint_format({"model_type": "llava_mistral", "architectures": ["LlavaMistralForCausalLM"]}) == "original"
    )
    named = {"vision_config": {"model_type": "clip_vision_model"}, "text_config": {"model_type": "llama"}}
    assert checkpoint_format({"model_type": "llava", **named}) == "llava_hf"
    assert checkpoint_format({"model_type": "llava_next", **named}) == "llava_hf"
    assert checkpoint_format({"model_type": "llava_onevision", **named}) == "llava_hf"
    with pytest.raises(CheckpointError, match="text_config name no model_type"):
        checkpoint_format({"model_type": "llava", "vision_config": named["vision_config"], "text_config": {}})


def test_a_checkpoint_without_its_tokenizer_model_names_the_file(hub_cache, tmp_path):
    target = tmp_path / "a-no-vocab"
    shutil.copytree(hub_cache["a"]["checkpoint"], target)
    (target / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match=r"no vocabulary \(tokenizer.model or tokenizer.json\); copy"):
        load_vlm(str(target))


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size"])
def test_a_missing_size_field_is_an_error_not_a_default(hub_cache, tmp_path, field):
    ckpt = _variant(hub_cache, tmp_path, "a", lambda c: c.pop(field))
    with pytest.raises(CheckpointError, match=rf"config.json lacks {field}; .*default values"):
        load_vlm(ckpt)


@pytest.mark.parametrize(
    "edit,message",
    [
        # a LLaVA-1.5 config with only the aspect ratio switched is no LLaVA-NeXT checkpoint (flat merge, no pinpoints)
        ({"image_aspect_ratio": "anyres"}, "mm_patch_merge_type='flat' is not supported on tiled input"),
        ({"image_aspect_ratio": "anyres_max_9"}, "mm_patch_merge_type='flat' is not supported on tiled input"),
        ({"mm_patch_merge_type": "spatial_unpad"}, "mm_patch_merge_type='spatial_unpad' with image_aspect_ratio='pad'"),
    ],
)
def test_tiled_inputs_that_are_no_released_next_fail_at_load(hub_cache, tmp_path, edit, message):
    """Original-format LLaVA-NeXT loads (tests/test_next_original.py); half-tiled configs are refused."""
    ckpt = _variant(hub_cache, tmp_path, "b", lambda c: c.update(edit))
    with pytest.raises(CheckpointError, match=message):
        load_vlm(ckpt)


def test_a_broken_sentencepiece_names_the_file_and_the_fix(hub_cache, monkeypatch):
    import lmms_ac.vlm.loaders as loaders

    monkeypatch.setattr(loaders, "sentencepiece_problem", lambda: "VersionError: gencode 7.36.1; fix: pip install X")
    with pytest.raises(CheckpointError, match=r"tokenizer\.model cannot be read: VersionError.*fix: pip install"):
        _load(hub_cache["a"])


def test_start_end_checkpoint_without_its_added_tokens_fails(hub_cache, tmp_path):
    target = tmp_path / "e-no-added"
    shutil.copytree(hub_cache["e"]["checkpoint"], target)
    (target / "added_tokens.json").unlink()
    with pytest.raises(CheckpointError, match=r"mm_use_im_start_end is true but the tokenizer .* has no"):
        load_vlm(str(target))
