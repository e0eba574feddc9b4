"""llava-hf LLaVA-NeXT and LLaVA-OneVision through ``lmms_ac_llava``: the tiled input equals
transformers' ``LlavaNextForConditionalGeneration``/``LlavaOnevisionForConditionalGeneration`` (greedy
tokens at batch 1 and 8 over images whose tile counts differ, one pooled by OneVision's anyres_max_9,
log-likelihoods of its forward), prefix sharing changes nothing, token permutation acts within each
view, and what the tiled path does not define fails at load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lmms_ac.vlm.prompts import build_prompt
from tiny_requests import build_tiny_tiled, generate_requests, loglikelihood_requests, tiny_model

QUESTIONS = [
    "Is there a dog in this image?",
    "What color is the car?",
    "How many people are there?",
    "Answer with the option's letter. A. cat B. dog",
    "Describe it.",
    "Is it red? Please answer yes or no.",
    "What is the main object in the image?",
    "0 1 2 3",
]
# square, wide, tall, very wide/tall and small images: 2 or 3 tiles (+ the base view), unpadded differently
# (200, 160) is downscaled into NeXT's 2 x 2 tiles and pooled by OneVision (5 x 4 tiles > anyres_max_9)
SIZES = [(64, 64), (64, 42), (42, 64), (96, 30), (30, 96), (200, 160), (20, 70), (100, 40)]


def images(n: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    out = [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for w, h in SIZES[:n]]
    return [im.convert(mode) for im, mode in zip(out, ["RGB", "L", "RGBA", "RGB"] * 2)]


@pytest.fixture(scope="module", params=["llava_next", "llava_onevision"])
def next_dir(request, tmp_path_factory) -> str:
    return build_tiny_tiled(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def vlm(next_dir):
    from lmms_ac.vlm.loaders import load_vlm

    return load_vlm(next_dir, dtype="float32")


@pytest.fixture(scope="module")
def reference(next_dir, vlm):
    import transformers
    from transformers import AutoProcessor

    cls = {
        "llava_next": transformers.LlavaNextForConditionalGeneration,
        "llava_onevision": transformers.LlavaOnevisionForConditionalGeneration,
    }[vlm.kind]
    model = cls.from_pretrained(next_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(next_dir)
    processor.tokenizer.padding_side = "left"
    return model, processor


def test_loads_as_the_tiled_model(vlm, next_dir):
    from lmms_ac.vlm.loaders import checkpoint_format, read_config
    from lmms_ac.vlm.tiled import TiledLlavaVLM

    assert checkpoint_format(read_config(next_dir)) == "llava_hf"
    assert isinstance(vlm, TiledLlavaVLM) and vlm.image_aspect_ratio == "anyres"
    assert vlm.prompt_tokenizer.mode == "joint"
    assert vlm.vision.grid == (4, 4) and vlm.vision.preprocess(images(1)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("batch_size", [1, 8])
def test_greedy_tokens_equal_transformers_llava_next(vlm, reference, batch_size):
    model, processor = reference
    ims = images(batch_size)
    prompts = [build_prompt(q, 1, "chat_template", vlm.tokenizer) for q in QUESTIONS[:batch_size]]
    inputs = processor(text=prompts, images=ims, return_tensors="pt", padding=True)
    with torch.no_grad():
        theirs = model.generate(
            **inputs,
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id,
            eos_token_id=processor.tokenizer.eos_token_id,
        )[:, inputs["input_ids"].shape[1] :]
    batch = vlm.build_batch([vlm.tokenize(p) for p in prompts], [[im] for im in ims])
    n_image_tokens = (inputs["input_ids"] == model.config.image_token_id).sum(1).tolist()
    assert [int(v.sum()) for v in batch.visual_mask] == n_image_tokens  # the processor's count, per image
    if batch_size == 8:
        assert len(set(n_image_tokens)) >= 4  # tile counts and unpadding differ between the images
    with torch.no_grad():
        ours = vlm.llm.generate(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=vlm.pad_token_id,
            eos_token_id=vlm.tokenizer.eos_token_id,
        )
    pad = vlm.pad_token_id
    for b in range(batch_size):
        assert [t for t in ours[b].tolist() if t != pad] == [t for t in theirs[b].tolist() if t != pad], b
    texts = vlm.generate(prompts, [[im] for im in ims], max_new_tokens=12)
    assert texts == vlm.tokenizer.batch_decode(theirs, skip_special_tokens=True)


def test_loglikelihood_equals_the_forward_of_transformers(vlm, reference):
    model, processor = reference
    for image, question in zip(images(3), QUESTIONS):
        context = build_prompt(question, 1, "chat_template", vlm.tokenizer)
        continuation = " Yes it is"
        ((ll, greedy),) = vlm.loglikelihood([context], [continuation], [[image]])
        full = processor(text=[context + continuation], images=[image], return_tensors="pt")
        n_ctx = processor(text=[context], images=[image], return_tensors="pt")["input_ids"].shape[1]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(**full).logits[0].float(), -1)
        ids = full["input_ids"][0]
        assert ll == pytest.approx(sum(float(logprobs[t - 1, ids[t]]) for t in range(n_ctx, len(ids))), abs=1e-4)
        assert greedy == all(int(logprobs[t - 1].argmax()) == int(ids[t]) for t in range(n_ctx, len(ids)))


# ------------------------------------------------------------------ through lmms_ac_llava, sharing on and off


def _docs():
    return [{"image": im, "question": q} for im in images(4, seed=1) for q in QUESTIONS[:3]]


def _model(next_dir, share: bool, batch: int, **kw):
    return tiny_model(next_dir, _docs(), share, batch, **kw)


def _gen():
    return generate_requests(_docs(), 8)


def _ll():
    return loglikelihood_requests(_docs())


@pytest.mark.parametrize("batch", [1, 8])
def test_prefix_sharing_on_and_off_give_identical_outputs(next_dir, batch):
    shared, plain = _model(next_dir, True, batch), _model(next_dir, False, batch)
    assert shared.generate_until(_gen()) == plain.generate_until(_gen())
    a, b = shared.loglikelihood(_ll()), plain.loglikelihood(_ll())
    assert [g for _, g in a] == [g for _, g in b]
    assert np.allclose([x for x, _ in a], [x for x, _ in b], atol=1e-5, rtol=0)
    stats = shared.prefix_runner.stats
    assert stats.images_encoded and stats.image_hits  # each image encoded once for its three questions


def _two_image_visual(doc):
    return [doc["image"], doc["other"]] if doc.get("other") is not None else [doc["image"]]


def test_multi_image_prompts_shared_or_not_and_with_single_image_neighbours(next_dir):
    """Prompts with two images next to prompts with one of the same images: on OneVision the same image has two
    encodings (alone in a multi-image prompt, tiled on its own); sharing must not mix them up."""
    ims = images(4, seed=2)
    docs = [{"image": ims[i % 2], "other": ims[2 + i % 2] if i % 3 == 0 else None, "question": q}
            for i, q in enumerate(QUESTIONS * 2)]  # fmt: skip

    def run(share: bool):
        lm = tiny_model(next_dir, docs, share, 4, task="mi")
        return lm.generate_until(generate_requests(docs, 6, visual=_two_image_visual, task="mi")), lm

    shared, lm = run(True)
    plain, _ = run(False)
    assert shared == plain
    assert lm.prefix_runner.stats.image_hits  # the second use of an image within its kind of prompt is a hit


# ------------------------------------------------------------------ what is not defined on tiles fails at load


def _pixel_and_token_probes():
    from lmms_ac.robustness.catalogue import PERTURBATIONS
    from lmms_ac.robustness.grammar import example_string, parse_perturbation

    probes = [parse_perturbation(example_string(PERTURBATIONS.get(name))) for name in PERTURBATIONS.names()]
    return [p for p in probes if p.stage in ("image", "tokens")]


@pytest.mark.parametrize("probe", _pixel_and_token_probes(), ids=str)
def test_probes_not_defined_on_tiles_are_refused_at_load(vlm, probe):
    """Every image/token probe either says how it acts on tiles (on_tiles) and builds, or is refused at load."""
    from lmms_ac.perturb_bridge import HookFactory

    if probe.on_tiles:
        HookFactory(vlm, perturbation=str(probe))
        return
    with pytest.raises(ValueError, match="not defined on LLaVA-NeXT's/OneVision's tiled input"):
        HookFactory(vlm, perturbation=str(probe))


# ------------------------------------------------------------------ token permutation on tiles


def test_token_views_follow_transformers_packing(vlm):
    """Views computed by packing labels: one per visual token, -1 exactly at the image_newline rows."""
    for image, tokens in zip(images(8), vlm.encode_images(images(8))):
        views = vlm.token_views(image)
        assert len(views) == len(tokens)
        newline = (tokens == vlm.image_newline.detach()).all(-1)
        assert torch.equal(views == -1, newline)
        assert (views[: vlm.vision.num_tokens] == 0).all()  # the base view comes first, whole
        pooled = vlm.kind == "llava_onevision" and image.size == (200, 160)
        assert int(views.max()) == 1 if pooled else int(views.max()) >= 2  # a pooled grid is one view


def test_tokperm_permutes_within_each_view_and_keeps_row_ends(vlm):
    from lmms_ac.perturb_bridge import HookFactory
    from lmms_ac.robustness import parse_perturbation
    from lmms_ac.robustness.token_ops import permute_tokens

    image = images(1)[0]  # square: base view + 4 full tiles of 16 tokens
    (clean,) = vlm.encode_images([image])
    hook = HookFactory(vlm, perturbation="tokperm").for_request("nx", 3)
    (perm,) = vlm.encode_images([image], [hook])
    again = vlm.encode_images([image], [HookFactory(vlm, perturbation="tokperm").for_request("nx", 3)])[0]
    assert torch.equal(perm, again)  # seeded by (seed, task, doc, image)
    views = vlm.token_views(image)
    moved = []
    for view in range(int(views.max()) + 1):
        rows = views == view
        a, b = clean[rows], perm[rows]
        assert not torch.equal(a, b)
        assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, b.tolist()))  # same tokens, same view
        moved.append([int((a == row).all(-1).nonzero()) for row in b])
    assert torch.equal(clean[views == -1], perm[views == -1])  # row ends in place
    assert len({tuple(m) for m in moved[1:]}) > 1  # tiles are not all permuted alike
    # the base view gets the draw a single 16-token grid gets from the same context
    p = parse_perturbation("tokperm")
    ctx = p.context("nx", 3, vlm.vision.grid, vlm.vision.patch_size, image_index=0)
    assert torch.equal(perm[views == 0], permute_tokens(clean[views == 0], ctx.generator()))


@pytest.mark.parametrize("batch", [1, 8])
def test_tokperm_on_tiles_is_the_same_shared_or_not_and_at_any_batch(next_dir, batch):
    shared = _model(next_dir, True, batch, perturbation="tokperm")
    plain = _model(next_dir, False, 1, perturbation="tokperm")
    clean = _model(next_dir, False, 1)
    assert shared.generate_until(_gen()) == plain.generate_until(_gen())
    a, b = shared.loglikelihood(_ll()), plain.loglikelihood(_ll())
    assert np.allclose([x for x, _ in a], [x for x, _ in b], atol=1e-5, rtol=0)
    assert not np.allclose([x for x, _ in a], [x for x, _ in clean.loglikelihood(_ll())], atol=1e-3)


def test_hidden_state_probes_run_on_tiles(vlm):
    from lmms_ac.perturb_bridge import HookFactory

    hooks = HookFactory(vlm, perturbation="modnoise_image_l0").for_request("nx", 0)
    prompt = [build_prompt(QUESTIONS[0], 1, "vicuna_v1")]
    clean = vlm.loglikelihood(prompt, [" Yes"], [images(1)])
    noisy = vlm.loglikelihood(prompt, [" Yes"], [images(1)], [hooks])
    assert clean[0][0] != noisy[0][0]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"vision_tower": "clip:openai/clip-vit-large-patch14-336"}, r"cannot replace a LLaVA-\w+ tower"),
        ({"image_aspect_ratio": "pad"}, r"image_aspect_ratio='pad' on a LLaVA-\w+ checkpoint"),
    ],
)
def test_settings_that_would_change_the_input_are_refused(next_dir, kwargs, message):
    from lmms_ac.vlm.loaders import CheckpointError, load_vlm

    with pytest.raises(CheckpointError, match=message):
        load_vlm(next_dir, **kwargs)


@pytest.mark.parametrize(
    "edit,message",
    [
        ({"vision_feature_select_strategy": "full"}, "vision_feature_select_strategy='full'"),
        ({"vision_feature_layer": [-2, -5]}, "multi-layer vision features"),
    ],
)
def test_configs_the_tiled_path_cannot_run_are_refused(edit, message):
    from lmms_ac.vlm.errors import CheckpointError
    from lmms_ac.vlm.next_hf import check_next_config

    with pytest.raises(CheckpointError, match=message):
        check_next_config({"model_type": "llava_next", "vision_config": {}, "text_config": {}, **edit}, "c")


def test_several_images_per_prompt_equal_transformers(vlm, reference):
    """NeXT tiles every image of a prompt; OneVision encodes each image of a multi-image prompt as its base view
    and one newline, and the same image alone in the next prompt fully tiled (transformers' batch_num_images)."""
    model, processor = reference
    pair = images(3)[1:]
    prompts = [
        build_prompt("Compare the two images.", 2, "chat_template", vlm.tokenizer),
        build_prompt("Describe it.", 1, "chat_template", vlm.tokenizer),
    ]
    batch = [pair, pair[:1]]
    inputs = processor(text=prompts, images=batch, return_tensors="pt", padding=True)
    with torch.no_grad():
        theirs = model.generate(**inputs, max_new_tokens=10, do_sample=False)[:, inputs["input_ids"].shape[1] :]
    expected = processor.batch_decode(theirs, skip_special_tokens=True)
    assert vlm.generate(prompts, batch, max_new_tokens=10) == expected
    counts = (inputs["input_ids"] == model.config.image_token_id).sum(1).tolist()
    built = vlm.build_batch([vlm.tokenize(p) for p in prompts], batch)
    assert [int(v.sum()) for v in built.visual_mask] == counts
    if vlm.kind == "llava_onevision":  # 2 x (base view + newline) against one fully tiled image
        assert counts[0] == 2 * (16 + 1) and counts[1] > 17


def test_released_strategy_tower_pairs_only():
    from lmms_ac.vlm.errors import CheckpointError
    from lmms_ac.vlm.next_hf import check_next_config

    check_next_config(
        {"vision_config": {"model_type": "siglip_vision_model"}, "vision_feature_select_strategy": "full"}, "c"
    )
    for strategy, tower in (("full", "clip_vision_model"), ("default", "siglip_vision_model")):
        config = {"vision_config": {"model_type": tower}, "vision_feature_select_strategy": strategy}
        with pytest.raises(CheckpointError, match="packed grid would not line up"):
            check_next_config(config, "c")


def test_layer_probes_read_the_base_view_of_the_tiled_input(vlm, reference, tmp_path):
    """The letterboxed square goes through the model's own tiling; block 1's states at the base view's positions
    equal transformers' hidden_states[1] there, and the attention balance covers every image position."""
    from lmms_ac.layers.extraction import LayerExtractor

    model, processor = reference
    extractor = LayerExtractor(vlm, [0, 1], prompts=["Describe the image."])
    path = tmp_path / "photo.png"
    images(2)[1].convert("RGB").save(path)
    pixels, _ = extractor.load(path)
    (layers,) = extractor.extract([pixels])
    n_grid = extractor.grid.rows * extractor.grid.cols
    assert layers.states[0].shape[0] == layers.states[1].shape[0] == n_grid
    square = Image.fromarray((pixels * 255).round().byte().permute(1, 2, 0).numpy())
    inputs = processor(text=[extractor.prompts[0]], images=[square], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    positions = (inputs["input_ids"][0] == model.config.image_token_id).nonzero()[:, 0]
    assert len(positions) > n_grid  # tiles and row ends follow the base view
    assert torch.allclose(layers.states[1], hidden[1][0, positions[:n_grid]], atol=1e-4)
    assert 0 < layers.attention[1] <= 1


def test_patch_shuffle_acts_on_the_image_before_tiling(vlm, reference):
    """Equal to transformers' generate on the image shuffled by hand (same op, same seeded draw)."""
    from transformers.image_transforms import convert_to_rgb

    from lmms_ac.perturb_bridge import HookFactory
    from lmms_ac.robustness import parse_perturbation

    model, processor = reference
    ims = images(4)
    hooks = [HookFactory(vlm, perturbation="patchshuffle4").for_request("nx", d) for d in range(4)]
    p = parse_perturbation("patchshuffle4")
    shuffled = []
    for doc, image in enumerate(ims):
        x = torch.from_numpy(np.array(convert_to_rgb(image, return_numpy=True))).permute(2, 0, 1).float() / 255
        y = p(x, p.context("nx", doc, vlm.vision.grid, vlm.vision.patch_size, image_index=0))
        shuffled.append(Image.fromarray((y * 255).round().byte().permute(1, 2, 0).numpy()))
    prompts = [build_prompt(q, 1, "chat_template", vlm.tokenizer) for q in QUESTIONS[:4]]
    inputs = processor(text=prompts, images=shuffled, return_tensors="pt", padding=True)
    with torch.no_grad():
        theirs = model.generate(**inputs, max_new_tokens=10, do_sample=False)[:, inputs["input_ids"].shape[1] :]
    ours = vlm.generate(prompts, [[im] for im in ims], hooks, max_new_tokens=10)
    assert ours == processor.batch_decode(theirs, skip_special_tokens=True)
    clean = vlm.encode_images(ims[:1])[0]
    assert not torch.equal(vlm.encode_images(ims[:1], hooks[:1])[0], clean)  # the shuffle reached the tokens
