"""Original-format LLaVA-NeXT (``liuhaotian/llava-v1.6-*`` layout: ``model_type: llava``, anyres, spatial_unpad,
the fine-tuned tower in the shards) and LLaVA-OneVision (``lmms-lab/llava-onevision-qwen2-7b-ov`` layout:
``LlavaQwenForCausalLM``, anyres_max_9, a SigLIP cut by one layer) load as the tiled model. Against their
llava-hf twins (the same weights, as transformers' conversions map them): identical visual tokens, logits and
(OneVision, same vocabulary) greedy answers; the tower is the checkpoint's, not the hub's; pinpoints read as the
original code reads them; what cannot run is refused at load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lmms_ac.testing.released import TOWER_ID, build_hf_cache
from lmms_ac.testing.tiny_next import PINPOINTS, build_llava_next_hf
from lmms_ac.testing.tiny_next_original import original_pinpoints, twin_of
from lmms_ac.vlm.loaders import CheckpointError, checkpoint_format, load_vlm, read_config

# square, wide, tall, smaller than a tile (a tie between the tall and the wide grid), large
SIZES = [(64, 64), (64, 42), (42, 64), (20, 20), (30, 96), (200, 160), (12, 12), (100, 40)]
PROMPT = "A chat between a curious user and an artificial intelligence assistant. USER: <image>\n{q} ASSISTANT:"
QUESTIONS = ["Is there a dog?", "What color is it?", "Count them.", "Describe it.", "Yes or no?", "Why?"]


def images(n: int = len(SIZES)):
    rng = np.random.RandomState(0)
    return [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for w, h in SIZES[:n]]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("next_original")
    build_hf_cache(str(base / "hf"))
    # the llava-hf twin carries the original's [width, height] list swapped to transformers' [height, width]
    hf = build_llava_next_hf(str(base / "llava-v1.6-vicuna-7b-hf"), pinpoints=original_pinpoints(PINPOINTS))
    orig = twin_of(hf["checkpoint"], str(base / "llava-v1.6-vicuna-7b"))
    return {"base": base, "hf": hf["checkpoint"], "orig": orig["checkpoint"]}


@pytest.fixture
def hub_cache(root, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root["base"] / "hf" / "hub"))
    return root


def load_twins(root) -> tuple:
    """The original checkpoint and its llava-hf twin, hub ids resolved in the fixture's cache; one image backend
    for both (the original path defaults to PIL, as LLaVA's code did) and LLaVA's chunked tokenization."""
    import huggingface_hub.constants

    saved = huggingface_hub.constants.HF_HUB_CACHE
    huggingface_hub.constants.HF_HUB_CACHE = str(root["base"] / "hf" / "hub")
    try:
        orig = load_vlm(root["orig"], dtype="float32", tokenization="chunked")
        hf = load_vlm(root["hf"], dtype="float32", image_backend="pil", tokenization="chunked")
    finally:
        huggingface_hub.constants.HF_HUB_CACHE = saved
    return orig, hf


@pytest.fixture(scope="module")
def pair(root):
    return load_twins(root)


def test_released_layout_loads_as_the_tiled_model(root, hub_cache, pair):
    from lmms_ac.vlm.tiled import TiledLlavaVLM

    config = read_config(root["orig"])
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaLlamaForCausalLM"]
    assert config["image_grid_pinpoints"] == PINPOINTS  # the released list as written, read as [width, height]
    assert checkpoint_format(config) == "original"
    orig, _ = pair
    assert isinstance(orig, TiledLlavaVLM) and orig.image_aspect_ratio == "anyres"
    assert orig.grid_pinpoints == original_pinpoints(PINPOINTS)  # transformers' [height, width]
    assert type(orig.image_processor).__name__ == "LlavaNextImageProcessorPil"
    auto = load_vlm(root["orig"], dtype="float32")
    assert auto.prompt_tokenizer.mode == "chunked"  # LLaVA's tokenizer_image_token, as for every original checkpoint


def test_visual_tokens_equal_the_llava_hf_twin(pair):
    orig, hf = pair
    for image in images():
        (a,) = orig.encode_images([image])
        (b,) = hf.encode_images([image])
        assert a.shape == b.shape and torch.equal(a, b), image.size


def test_logits_equal_the_llava_hf_twin(pair):
    orig, hf = pair
    prompts = [PROMPT.format(q=q) for q in QUESTIONS]
    ims = [[im] for im in images(len(prompts))]
    vocab = orig.llm.config.vocab_size
    outs = []
    for vlm in (orig, hf):
        batch = vlm.build_batch([vlm.tokenize(p) for p in prompts], ims)
        with torch.no_grad():
            logits = vlm.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
        outs.append((batch, logits[..., :vocab]))
    (a, la), (b, lb) = outs
    assert torch.equal(a.attention_mask, b.attention_mask)
    real = a.attention_mask.bool()  # padding differs (<pad> is llava-hf's own token); it is masked out
    assert torch.equal(a.inputs_embeds[real], b.inputs_embeds[real])
    assert torch.allclose(la[real], lb[real], atol=1e-5, rtol=0)
    assert hf.llm.config.vocab_size == vocab + 2  # llava-hf added <image> and <pad>; the original has neither


def test_the_tower_is_the_checkpoints_fine_tuned_one(root, pair):
    from safetensors.torch import load_file

    orig, _ = pair
    saved = {}
    for shard in sorted((root["base"] / "llava-v1.6-vicuna-7b").glob("*.safetensors")):
        saved.update(load_file(str(shard)))
    hub = torch.load(
        next((root["base"] / "hf" / "hub").rglob("pytorch_model.bin")), weights_only=True, map_location="cpu"
    )
    key = "encoder.layers.0.self_attn.q_proj.weight"
    ours = dict(orig.vision.model.named_parameters())[key]
    assert torch.equal(ours, saved[f"model.vision_tower.vision_tower.vision_model.{key}"].float())
    assert not torch.allclose(
        ours, hub[f"vision_model.{key}"].float()
    )  # mm_vision_tower's weights would be another tower


def without_saved_tower(src: Path, dst: Path, **config_fields) -> str:
    """A copy of the original checkpoint ``src`` whose shards hold no tower (trained with it frozen), its
    config.json updated with ``config_fields``."""
    from safetensors.torch import load_file

    from lmms_ac.testing.released import write_json, write_sharded

    dst.mkdir()
    state = {}
    for shard in sorted(src.glob("*.safetensors")):
        state.update({k: v for k, v in load_file(str(shard)).items() if not k.startswith("model.vision_tower.")})
    for f in src.iterdir():
        if not f.name.startswith("model"):
            shutil.copy(f, dst / f.name)
    config = json.loads((src / "config.json").read_text())
    write_json(dst / "config.json", {**config, **config_fields})
    write_sharded(dst, state, safetensors=True)
    return str(dst)


def test_frozen_tower_comes_from_mm_vision_tower(root, hub_cache, tmp_path):
    """A NeXT checkpoint trained with a frozen tower saves none: LLaVA then loads mm_vision_tower's weights."""
    src = root["base"] / "llava-v1.6-vicuna-7b"
    dst = tmp_path / "llava-next-frozen-tower"
    vlm = load_vlm(
        without_saved_tower(src, dst, unfreeze_mm_vision_tower=False, mm_vision_tower_lr=None), dtype="float32"
    )
    hub = torch.load(next((root["base"] / "hf" / "hub").rglob("pytorch_model.bin")), weights_only=True)
    key = "encoder.layers.0.self_attn.q_proj.weight"
    assert torch.equal(dict(vlm.vision.model.named_parameters())[key], hub[f"vision_model.{key}"].float())


def llava_next_best_resolution(size, pinpoints):
    """LLaVA-NeXT's rule, from its definition: ``size`` is PIL's (width, height), each pinpoint a (width,
    height); the largest effective resolution wins, then the least waste, then the first listed."""
    width, height = size
    best, best_fit = None, None
    for w, h in pinpoints:
        scale = min(w / width, h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        fit = (effective, -(w * h - effective))
        if best_fit is None or fit > best_fit:
            best, best_fit = (w, h), fit
    return best


def test_grid_choice_follows_llava_next_reading_of_pinpoints(pair):
    from transformers.image_processing_utils import select_best_resolution

    orig, _ = pair
    for width, height in SIZES:
        h, w = select_best_resolution((height, width), orig.image_processor.image_grid_pinpoints)
        assert (w, h) == llava_next_best_resolution((width, height), PINPOINTS), (width, height)
    # the released list read as transformers reads it tiles a tile-sized square image the other way
    h, w = select_best_resolution((20, 20), PINPOINTS)
    assert (w, h) != llava_next_best_resolution((20, 20), PINPOINTS)


def _edited(root, tmp_path, **fields):
    dst = tmp_path / "edited"
    shutil.copytree(root["orig"], dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(fields)
    (dst / "config.json").write_text(json.dumps(config))
    return str(dst)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"image_aspect_ratio": "anyres_max_9"}, "original-format LLaVA-OneVision loads with siglip towers only"),
        ({"mm_patch_merge_type": "spatial"}, "mm_patch_merge_type='spatial' is not supported"),
        ({"mm_patch_merge_type": "spatial_unpad", "image_aspect_ratio": "pad"}, "tiles need"),
        ({"mm_projector_type": "linear"}, "only 'mlp2x_gelu'"),
        ({"image_grid_pinpoints": "1x1 to 3x3"}, "neither a list of [width, height] pairs"),
    ],
)
def test_what_cannot_run_is_refused_at_load(root, hub_cache, tmp_path, fields, message):
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_vlm(_edited(root, tmp_path, **fields), dtype="float32")


@pytest.mark.parametrize(
    "kwargs", [{"vision_tower": f"clip:{TOWER_ID}"}, {"image_aspect_ratio": "pad"}], ids=["tower", "aspect"]
)
def test_settings_that_change_its_input_are_refused(root, hub_cache, kwargs):
    with pytest.raises(CheckpointError, match="leave vision_tower and image_aspect_ratio unset"):
        load_vlm(root["orig"], dtype="float32", **kwargs)


def test_generate_runs_and_probes_follow_the_tiled_rules(pair):
    orig, _ = pair
    texts = orig.generate([PROMPT.format(q=q) for q in QUESTIONS[:3]], [[im] for im in images(3)], max_new_tokens=4)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    views = orig.token_views(images(1)[0])
    assert int((views == -1).sum()) > 0 and int((views == 0).sum()) == 16  # row ends; the 4 x 4 base view


# ------------------------------------------------------------------------------------------ LLaVA-OneVision
@pytest.fixture(scope="module")
def ov_root(tmp_path_factory):
    from lmms_ac.testing.tiny_next_original import build_siglip_cache, onevision_twin_of
    from lmms_ac.testing.tiny_onevision import build_llava_onevision_hf

    base = tmp_path_factory.mktemp("ov_original")
    build_siglip_cache(str(base / "hf"), layers=4)  # the original code cuts the last: the checkpoint saves 3
    hf = build_llava_onevision_hf(str(base / "llava-onevision-qwen2-7b-ov-hf"))["checkpoint"]
    orig = onevision_twin_of(hf, str(base / "llava-onevision-qwen2-7b-ov"))["checkpoint"]
    return {"base": base, "hf": hf, "orig": orig}


@pytest.fixture
def ov_cache(ov_root, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(ov_root["base"] / "hf" / "hub"))
    return ov_root


@pytest.fixture(scope="module")
def ov_pair(ov_root):
    return load_twins(ov_root)


def test_onevision_released_layout_loads_as_the_tiled_model(ov_root, ov_pair):
    from lmms_ac.vlm.tiled import TiledLlavaVLM

    config = read_config(ov_root["orig"])
    assert config["architectures"] == ["LlavaQwenForCausalLM"] and config["image_aspect_ratio"] == "anyres_max_9"
    assert config["image_grid_pinpoints"] == "(1x1),...,(6x6)"
    orig, hf = ov_pair
    assert isinstance(orig, TiledLlavaVLM) and orig.kind == "llava_onevision"
    assert sorted(map(tuple, orig.grid_pinpoints)) == sorted(map(tuple, hf.grid_pinpoints))  # the 6 x 6 range
    assert type(orig.image_processor).__name__ == "LlavaOnevisionImageProcessorPil"
    assert orig.prompt_tokenizer.mode == "chunked" and orig.vision.num_prefix_tokens == 0
    assert len(orig.vision.model.encoder.layers) == 3  # the layers the checkpoint saved, not the hub tower's 4


def test_onevision_visual_tokens_and_greedy_answers_equal_the_llava_hf_twin(ov_pair):
    orig, hf = ov_pair
    ims = images()
    for image in ims:  # (200, 160) is pooled by anyres_max_9
        (a,) = orig.encode_images([image])
        (b,) = hf.encode_images([image])
        assert a.shape == b.shape and torch.equal(a, b), image.size
    from lmms_ac.vlm.prompts import build_prompt

    prompts = [build_prompt(q, 1, "chat_template", orig.tokenizer) for q in QUESTIONS]
    assert prompts[0].startswith("<|im_start|>system\nYou are a helpful assistant.")  # Qwen2's own template
    batch = [[im] for im in ims[: len(prompts)]]
    assert orig.generate(prompts, batch, max_new_tokens=6) == hf.generate(prompts, batch, max_new_tokens=6)


def test_onevision_frozen_tower_is_the_hub_tower_cut_by_one_layer(ov_root, ov_cache, tmp_path):
    from safetensors.torch import load_file

    vlm = load_vlm(without_saved_tower(Path(ov_root["orig"]), tmp_path / "ov-frozen-tower"), dtype="float32")
    hub = load_file(str(next((ov_root["base"] / "hf" / "hub").rglob("model.safetensors"))))
    assert len(vlm.vision.model.encoder.layers) == 3
    key = "encoder.layers.2.self_attn.q_proj.weight"
    assert torch.equal(dict(vlm.vision.model.named_parameters())[key], hub[f"vision_model.{key}"].float())
