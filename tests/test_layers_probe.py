"""lmms-ac layers: planted answers for C@L, reconstruction and attention balance on tiny models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmms_ac.layers.extraction import LayerExtractor, parse_layers
from lmms_ac.layers.metrics import LinearReconstruction, split_train
from lmms_ac.layers.pipeline import run_layers
from lmms_ac.scores.correspondence import score_c
from lmms_ac.testing.spair import PixelPatchEncoder, write_photo_fixture
from lmms_ac.testing.tiny_layers import tiny_layer_vlm


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spair_layers")
    write_photo_fixture(root)
    return root


@pytest.fixture(scope="module")
def identity_report(photo_root):
    vlm = tiny_layer_vlm(identity_llm=True, projector="orthogonal")
    return run_layers(vlm, photo_root, layers=[0, 1, 2], batch_size=5, progress=False)


def test_identity_layers_keep_the_encoder_c_and_reconstruct_it(identity_report, photo_root):
    r = identity_report
    reference = score_c(PixelPatchEncoder(), photo_root, "test", progress=False).overall  # score-c itself
    assert r.c_encoder == pytest.approx(reference)
    assert r.c_encoder > 80  # the encoder really matches: not a degenerate agreement
    for layer in (0, 1, 2):
        assert r.c[layer] == pytest.approx(r.c_encoder), layer  # orthogonal projector + identity blocks
        assert r.recon[layer] > 0.995, (layer, r.recon[layer])
    assert r.n_pairs == 20 and r.n_images == 24
    assert r.recon_split["train_images"] == 12 and r.recon_split["test_images"] == 12
    assert r.forwards == math.ceil(6 / 5) * 4  # one forward per image batch, per category (6 images each)


def test_window_softargmax_matches_score_c_too(photo_root):
    vlm = tiny_layer_vlm(identity_llm=True)
    r = run_layers(
        vlm,
        photo_root,
        layers=[0, 2],
        progress=False,
        attention=False,
        reconstruction=False,
        method="window_softargmax",
        alpha=0.05,
    )
    reference = score_c(PixelPatchEncoder(), photo_root, "test", method="window_softargmax", alpha=0.05, progress=False)
    assert r.c_encoder == pytest.approx(reference.overall)
    assert r.c[0] == pytest.approx(reference.overall) and r.c[2] == pytest.approx(reference.overall)


def test_destroyed_spatial_information_scores_chance_from_layer_0(photo_root, identity_report):
    vlm = tiny_layer_vlm(identity_llm=True, projector="destroy")
    r = run_layers(vlm, photo_root, layers=[0, 2], progress=False, attention=False)
    assert r.c_encoder == pytest.approx(identity_report.c_encoder)  # the encoder itself is intact
    for layer in (0, 2):
        assert abs(r.c[layer] - r.c_chance) < 4.0, (r.c[layer], r.c_chance)
    assert r.c_chance < 10
    # a random (non-identity) LLM cannot bring the lost geometry back at layer 0
    r2 = run_layers(
        tiny_layer_vlm(projector="destroy"),
        photo_root,
        layers=[0],
        progress=False,
        attention=False,
        reconstruction=False,
    )
    assert abs(r2.c[0] - r2.c_chance) < 4.0


def _states_from_transformers(vlm, extractor, pixels):
    """Visual states via output_hidden_states of a plain forward (independent of our hooks)."""
    vision = vlm.vision
    visual = vlm.projector(vision.encode(vision.normalize(torch.stack(pixels))))
    embeds, mask, spans, _ = extractor._sequences(visual, 0)
    out = vlm.llm.model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
    return [torch.stack([h[b, s:e] for b, (s, e) in enumerate(spans)]) for h in out.hidden_states]


def test_hooks_match_output_hidden_states_and_layer_subset_stops_early(photo_root):
    vlm = tiny_layer_vlm(projector="random", n_layers=3)
    paths = sorted((photo_root / "JPEGImages").rglob("*.jpg"))[:3]
    full = LayerExtractor(vlm, [0, 1, 2, 3], prompts=["Describe the image.", "What color is the car? red green"])
    pixels = [full.load(p)[0] for p in paths]
    got = full.extract(pixels)
    ref = _states_from_transformers(vlm, full, pixels)
    for layer in (0, 1, 2):  # transformers' last entry is after the final norm; ours is the block output
        for b in range(3):
            torch.testing.assert_close(got[b].states[layer], ref[layer][b], rtol=1e-4, atol=1e-5)
    calls = []
    handle = vlm.llm.model.layers[2].register_forward_hook(lambda *a: calls.append(1))
    sub = LayerExtractor(vlm, [1], attention=False, prompts=["Describe the image.", "What color is the car? red green"])
    part = sub.extract(pixels)
    handle.remove()
    assert not calls  # blocks after the deepest requested layer are not run
    assert set(part[0].states) == {1}
    torch.testing.assert_close(part[1].states[1], got[1].states[1])


def test_attention_balance_equals_uniform_share_when_queries_and_keys_are_zero(photo_root):
    vlm = tiny_layer_vlm(zero_qk=True, n_layers=2)
    prompts = ["Describe the image.", "Is there a dog in this image? Please answer yes or no."]
    ex = LayerExtractor(vlm, [1, 2], prompts=prompts)
    paths = sorted((photo_root / "JPEGImages").rglob("*.jpg"))[:2]
    out = ex.extract([ex.load(p)[0] for p in paths])
    n_img = 16 * 16
    for b in range(len(prompts)):
        ids = ex.prompt_ids[b]
        pos = ids.index(vlm.image_token_id)
        length = len(ids) - 1 + n_img
        # uniform causal attention: position t spreads its mass over t + 1 positions, n_img of them image
        expected = np.mean([n_img / (t + 1) for t in range(pos + n_img, length)])
        for layer in (1, 2):
            assert out[b].attention[layer] == pytest.approx(expected, rel=1e-5)
        assert out[b].uniform_share == pytest.approx(expected)


def test_attention_balance_equals_a_hand_computation(photo_root):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    vlm = tiny_layer_vlm(projector="random", n_layers=1, attn_implementation="sdpa", seed=3)
    for block in vlm.llm.model.layers:  # make the attention pattern far from uniform
        block.self_attn.q_proj.weight.mul_(20)
    prompts = ["Describe the image.", "What is in this picture? Answer with the option's letter."]
    ex = LayerExtractor(vlm, [1], prompts=prompts)
    paths = sorted((photo_root / "JPEGImages").rglob("*.jpg"))[:2]
    pixels = [ex.load(p)[0] for p in paths]
    batched = ex.extract(pixels)  # right-padded batch of two prompt lengths
    assert vlm.llm.config._attn_implementation == "sdpa"  # restored after the eager pass
    block, heads = vlm.llm.model.layers[0], 4
    for b in range(2):
        visual = vlm.projector(vlm.vision.encode(vlm.vision.normalize(pixels[b][None])))
        embeds, _, spans, _ = ex._sequences(visual, b)
        (s, e), T = spans[0], embeds.shape[1]
        x = block.input_layernorm(embeds)
        q = block.self_attn.q_proj(x).view(1, T, heads, -1).transpose(1, 2)
        k = block.self_attn.k_proj(x).view(1, T, heads, -1).transpose(1, 2)
        cos, sin = vlm.llm.model.rotary_emb(x, torch.arange(T)[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        probs = scores.softmax(-1)[0]  # [H, T, T]
        expected = float(probs[:, e:, s:e].sum(-1).mean())
        assert batched[b].attention[1] == pytest.approx(expected, rel=1e-4)
        assert abs(expected - batched[b].uniform_share) > 0.01  # the planted pattern is not uniform


def test_batching_does_not_change_results(photo_root):
    vlm = tiny_layer_vlm(projector="random")
    a = run_layers(
        vlm, photo_root, layers=[0, 2], batch_size=1, progress=False, prompts=["Describe.", "What is in this picture?"]
    )
    b = run_layers(
        vlm, photo_root, layers=[0, 2], batch_size=4, progress=False, prompts=["Describe.", "What is in this picture?"]
    )
    assert a.c == b.c and a.c_encoder == b.c_encoder
    for layer in (0, 2):
        assert a.recon[layer] == pytest.approx(b.recon[layer], abs=1e-6)
    assert a.attn_img[2] == pytest.approx(b.attn_img[2], rel=1e-5)
    assert a.forwards == 24 and b.forwards == 8


def test_reconstruction_recovers_a_planted_linear_map_and_fails_on_noise():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 5, generator=g)
    items = list(range(40))
    train = split_train(items, seed=1)
    assert len(train) == 20 and not train.isdisjoint(items)
    linear, noise = LinearReconstruction([1], train), LinearReconstruction([1], train)
    for i in items:
        x = torch.randn(30, 8, generator=g)
        linear.add(i, i, x @ w + 0.5, {1: x})
        noise.add(i, i, torch.randn(30, 5, generator=g) + 0.2, {1: x})
    assert linear.results()[1].cosine > 0.9999
    assert noise.results()[1].cosine < 0.5


def test_parse_layers_and_bad_input():
    assert parse_layers("all", 4) == [0, 1, 2, 3, 4]
    assert parse_layers("0,2,-1", 4) == [0, 2, 4]
    assert parse_layers("1-3", 4) == [1, 2, 3]
    with pytest.raises(ValueError, match="outside 0..4"):
        parse_layers("7", 4)
    with pytest.raises(ValueError, match="cannot read"):
        parse_layers("a", 4)
    with pytest.raises(ValueError, match="both sides"):
        LinearReconstruction([0], {0}).results()


def test_mean_padding_fills_only_the_border(photo_root):
    vlm = tiny_layer_vlm()
    path = next((photo_root / "JPEGImages").rglob("*.jpg"))
    zero_px, box = LayerExtractor(vlm, [0], pad="zero").load(path)
    mean_px, box2 = LayerExtractor(vlm, [0], pad="mean").load(path)
    assert box == box2 and (box.pad_x > 0 or box.pad_y > 0)
    inside = (slice(None), slice(box.pad_y, box.pad_y + box.new_height), slice(box.pad_x, box.pad_x + box.new_width))
    torch.testing.assert_close(mean_px[inside], zero_px[inside])
    border = torch.ones(zero_px.shape[1:], dtype=torch.bool)
    border[inside[1:]] = False
    assert float(zero_px[:, border].abs().max()) == 0.0
    assert torch.allclose(mean_px[:, border], torch.tensor(vlm.vision.image_spec.mean)[:, None])
    with pytest.raises(ValueError, match="pad must be one of"):
        LayerExtractor(vlm, [0], pad="edge")


def test_reconstruction_is_not_swamped_by_a_huge_variance_channel():
    # LLM residual streams carry a few channels with enormous activations; the map must still use the others
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 5, generator=g)
    w[0] = 0  # the huge channel carries nothing about the target
    items = list(range(30))
    probe = LinearReconstruction([3], split_train(items, seed=0))
    for i in items:
        x = torch.randn(40, 8, generator=g)
        target = x @ w
        x[:, 0] *= 1e4
        probe.add(i, i, target, {3: x})
    assert probe.results()[3].cosine > 0.999
