"""The VLM computes what transformers' LlavaForConditionalGeneration computes, and both checkpoint
formats give the same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lmms_ac.testing.datasets import sample_images
from lmms_ac.vlm.prompts import build_prompt

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


@pytest.fixture(scope="module")
def hf_model(llava_hf_dir):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(llava_hf_dir).eval()
    processor = AutoProcessor.from_pretrained(llava_hf_dir)
    processor.tokenizer.padding_side = "left"
    return model, processor


def _hf_generate(hf_model, prompts, images, max_new_tokens=12):
    model, processor = hf_model
    inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id,
            eos_token_id=processor.tokenizer.eos_token_id,
        )
    return out[:, inputs["input_ids"].shape[1] :]


def _our_tokens(vlm, prompts, images, max_new_tokens=12):
    batch = vlm.build_batch([vlm.tokenize(p) for p in prompts], [[im] for im in images])
    with torch.no_grad():
        return vlm.llm.generate(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=vlm.pad_token_id,
            eos_token_id=vlm.tokenizer.eos_token_id,
        )


def _strip(row, pad_id):
    return [t for t in row.tolist() if t != pad_id]


@pytest.mark.parametrize("batch_size", [1, 8])
def test_greedy_tokens_equal_transformers_llava(llava_hf_vlm, hf_model, batch_size):
    vlm = llava_hf_vlm
    images = [im.convert("RGB") for im in sample_images(batch_size, seed=3)]
    prompts = [build_prompt(q, 1, "chat_template", vlm.tokenizer) for q in QUESTIONS[:batch_size]]
    ours = _our_tokens(vlm, prompts, images)
    theirs = _hf_generate(hf_model, prompts, images)
    pad = vlm.pad_token_id
    for b in range(batch_size):
        assert _strip(ours[b], pad) == _strip(theirs[b], pad), f"sample {b} differs"
    # and the public text API decodes exactly those tokens
    texts = vlm.generate(prompts, [[im] for im in images], max_new_tokens=12)
    assert texts == vlm.tokenizer.batch_decode(theirs, skip_special_tokens=True)


def test_batched_generation_equals_one_by_one(llava_hf_vlm):
    vlm = llava_hf_vlm
    images = [[im] for im in sample_images(5, seed=5)]
    prompts = [build_prompt(q, 1, "vicuna_v1") for q in QUESTIONS[:5]]
    batched = vlm.generate(prompts, images, max_new_tokens=10)
    single = [vlm.generate([p], [ims], max_new_tokens=10)[0] for p, ims in zip(prompts, images)]
    assert batched == single


def test_loglikelihood_equals_hand_computation(llava_hf_vlm, hf_model):
    vlm = llava_hf_vlm
    model, processor = hf_model
    image = sample_images(1, seed=7)[0].convert("RGB")
    context = build_prompt("Is there a cat?", 1, "chat_template", vlm.tokenizer)
    continuation = " Yes it is"
    ((ll, greedy),) = vlm.loglikelihood([context], [continuation], [[image]])
    # by hand: run transformers' model on the full text, sum log-probs of the continuation tokens
    full = processor(text=[context + continuation], images=[image], return_tensors="pt")
    ctx = processor(text=[context], images=[image], return_tensors="pt")
    n_ctx = ctx["input_ids"].shape[1]
    with torch.no_grad():
        logits = model(**full).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    ids = full["input_ids"][0]
    expected = sum(float(logprobs[t - 1, ids[t]]) for t in range(n_ctx, len(ids)))
    assert ll == pytest.approx(expected, abs=1e-4)
    expected_greedy = all(int(logprobs[t - 1].argmax()) == int(ids[t]) for t in range(n_ctx, len(ids)))
    assert greedy == expected_greedy


def test_loglikelihood_batch_matches_single(llava_hf_vlm):
    vlm = llava_hf_vlm
    images = [[im] for im in sample_images(3, seed=9)]
    ctxs = [build_prompt(q, 1, "vicuna_v1") for q in QUESTIONS[:3]]
    conts = [" A", " Yes", " two people"]
    batched = vlm.loglikelihood(ctxs, conts, images)
    single = [vlm.loglikelihood([c], [k], [i])[0] for c, k, i in zip(ctxs, conts, images)]
    for (a, ga), (b, gb) in zip(batched, single):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb


@pytest.mark.parametrize("aspect", ["pad", "original"])
def test_original_format_equals_llava_hf(llava_hf_dir, original_dirs, aspect):
    from lmms_ac.vlm.loaders import load_vlm

    hf = load_vlm(llava_hf_dir, image_aspect_ratio=aspect)
    orig = load_vlm(original_dirs["full"]["checkpoint"], image_aspect_ratio=aspect)
    images = [[im] for im in sample_images(4, seed=11)]  # non-square, several modes
    prompts = [build_prompt(q, 1, "vicuna_v1") for q in QUESTIONS[:4]]
    assert hf.generate(prompts, images, max_new_tokens=10) == orig.generate(prompts, images, max_new_tokens=10)
    a = hf.loglikelihood(prompts, [" Yes"] * 4, images)
    b = orig.loglikelihood(prompts, [" Yes"] * 4, images)
    assert np.allclose([x for x, _ in a], [x for x, _ in b], atol=1e-5)


def test_original_format_reads_pad_from_config(original_dirs):
    from lmms_ac.vlm.loaders import load_vlm

    assert load_vlm(original_dirs["full"]["checkpoint"]).image_aspect_ratio == "pad"


def test_stage1_projector_on_base_llm(llava_hf_dir, original_dirs):
    from lmms_ac.vlm.loaders import load_vlm

    stage1 = original_dirs["stage1"]
    vlm = load_vlm(stage1["checkpoint"], model_base=stage1["base_llm"], image_aspect_ratio="original")
    hf = load_vlm(llava_hf_dir)
    images = [[im] for im in sample_images(2, seed=13)]
    prompts = [build_prompt("Describe it.", 1, "plain")] * 2
    assert vlm.generate(prompts, images, max_new_tokens=8) == hf.generate(prompts, images, max_new_tokens=8)


def test_pad_to_square_uses_mean_colour(llava_hf_vlm):
    from lmms_ac.vlm.images import expand_to_square, mean_fill

    im = Image.new("RGB", (40, 10), (255, 0, 0))
    sq = expand_to_square(im, mean_fill(llava_hf_vlm.vision.image_spec.mean))
    assert sq.size == (40, 40)
    assert sq.getpixel((0, 0)) == mean_fill(llava_hf_vlm.vision.image_spec.mean)
    assert sq.getpixel((20, 20)) == (255, 0, 0)


def test_stop_strings_stop_rows_and_cut_text(llava_hf_vlm):
    from lmms_ac.vlm.model import StopOnStrings, cut_at_stops

    tok = llava_hf_vlm.tokenizer
    rows = [
        tok("the answer is Yes\n\nUSER:", add_special_tokens=False)["input_ids"],
        tok("no stop string in this one at all", add_special_tokens=False)["input_ids"],
    ]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    assert StopOnStrings(tok, ["\n\n"])(ids, None).tolist() == [True, False]
    assert cut_at_stops("Yes\n\nUSER: more", ["USER:", "\n\n"]) == "Yes"
    # generation honours `until`: whatever is produced, no stop string survives in the text
    texts = llava_hf_vlm.generate(
        [build_prompt(q, 1, "vicuna_v1") for q in QUESTIONS[:4]],
        [[im] for im in sample_images(4)],
        max_new_tokens=20,
        until=["o", "e"],
    )
    assert all("o" not in t and "e" not in t for t in texts)


def test_hidden_hook_touches_only_the_chosen_layer_and_sample(llava_hf_vlm):
    """A hidden-state hook at layer L changes that sample's hidden state entering block L (prefill) and
    nothing of the other samples in the batch."""
    from lmms_ac.vlm.hooks import SampleHooks
    from lmms_ac.vlm.model import decoder_layers

    vlm = llava_hf_vlm
    images = [[im] for im in sample_images(2, seed=21)]
    prompts = [
        build_prompt("Describe it.", 1, "vicuna_v1"),
        build_prompt("A longer question about the image?", 1, "vicuna_v1"),
    ]
    seen = []
    hook = SampleHooks(hidden=lambda h, vm: (seen.append((h.shape[0], int(vm.sum()))), h + 1.0)[1], hidden_layer=1)
    ids = [vlm.tokenize(p) for p in prompts]
    clean = vlm.build_batch(ids, images)
    with torch.no_grad():
        base = vlm.llm(
            inputs_embeds=clean.inputs_embeds, attention_mask=clean.attention_mask, output_hidden_states=True
        )
        pert = vlm.build_batch(ids, images, [None, hook])
        with vlm.hidden_hooks(pert, [None, hook]):
            out = vlm.llm(
                inputs_embeds=pert.inputs_embeds, attention_mask=pert.attention_mask, output_hidden_states=True
            )
    n_vis = vlm.vision.num_tokens
    assert seen == [(pert.input_lengths[1], n_vis)]  # the hook saw exactly sample 1's unpadded positions
    assert torch.allclose(out.logits[0], base.logits[0], atol=1e-5)  # sample 0 untouched
    sl = pert.span(1)
    assert torch.allclose(out.hidden_states[1][1, sl], base.hidden_states[1][1, sl] + 1.0, atol=1e-5)
    assert len(decoder_layers(vlm.llm)) == 2
