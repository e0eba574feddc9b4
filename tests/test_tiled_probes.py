"""Probes on LLaVA-NeXT's/OneVision's tiled input (docs/METHODS.md#tiled-inputs-llava-next-and-onevision):
the global token permutation across the base view and the tiles, with the row-end tokens in place; the
same draw as ``tokperm`` on one view; seeded per image, so the same at any batch size and with prefix
sharing on or off."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from lmms_eval.api.instance import Instance
from PIL import Image

QUESTIONS = ["Is there a dog in this image?", "What color is the car?", "How many people are there?", "Describe it."]
# square (4 full tiles), wide, tall, and (200, 160): 2 x 2 tiles on NeXT, pooled by OneVision
SIZES = [(64, 64), (64, 42), (42, 64), (200, 160)]


def images(n: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    out = [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for w, h in SIZES[:n]]
    return [im.convert(mode) for im, mode in zip(out, ["RGB", "L", "RGBA", "RGB"])]


@pytest.fixture(scope="module", params=["llava_next", "llava_onevision"])
def next_dir(request, tmp_path_factory) -> str:
    if request.param == "llava_next":
        from lmms_ac.testing.tiny_next import build_llava_next_hf

        return build_llava_next_hf(str(tmp_path_factory.mktemp("next") / "llava-v1.6-vicuna-7b-hf"))["checkpoint"]
    from lmms_ac.testing.tiny_onevision import build_llava_onevision_hf

    target = tmp_path_factory.mktemp("ov") / "llava-onevision-qwen2-7b-ov-hf"
    return build_llava_onevision_hf(str(target))["checkpoint"]


@pytest.fixture(scope="module")
def vlm(next_dir):
    from lmms_ac.vlm.loaders import load_vlm

    return load_vlm(next_dir, dtype="float32")


def _hook(vlm, form: str, doc: int = 3):
    from lmms_ac.perturb_bridge import HookFactory

    return HookFactory(vlm, perturbation=form).for_request("nx", doc)


def _rows(t: torch.Tensor):
    return sorted(map(tuple, t.tolist()))


# ------------------------------------------------------------------ through lmms_ac_llava, sharing on and off


def _docs():
    return [{"image": im, "question": q} for im in images(4, seed=1) for q in QUESTIONS[:2]]


def _visual(doc):
    return [doc["image"]]


def _model(next_dir, share: bool, batch: int, **kw):
    from lmms_ac.models.lmms_ac_llava import LmmsAcLlava

    lm = LmmsAcLlava(pretrained=next_dir, device="cpu", dtype="float32", batch_size=batch, prefix_sharing=share, **kw)
    lm.task_dict["nx"] = {"test": _docs()}
    return lm


def _gen(n):
    docs = _docs()
    return [
        Instance(
            "generate_until",
            (docs[i]["question"], {"max_new_tokens": 6, "until": ["\n\n"]}, _visual, i, "nx", "test"),
            idx=0,
            metadata={"task": "nx", "doc_id": i, "repeats": 1},
        )
        for i in range(n)
    ]


def _ll(n):
    docs = _docs()
    return [
        Instance(
            "loglikelihood",
            (docs[i]["question"], ans, _visual, i, "nx", "test"),
            idx=0,
            metadata={"task": "nx", "doc_id": i, "repeats": 1},
        )
        for i in range(n)
        for ans in ("Yes", "No")
    ]


def _same_at_any_batch_and_sharing(next_dir, form: str, batch: int) -> None:
    shared = _model(next_dir, True, batch, perturbation=form)
    plain = _model(next_dir, False, 1, perturbation=form)
    clean = _model(next_dir, False, 1)
    n = len(_docs())
    assert shared.generate_until(_gen(n)) == plain.generate_until(_gen(n))
    a, b = shared.loglikelihood(_ll(n)), plain.loglikelihood(_ll(n))
    assert np.allclose([x for x, _ in a], [x for x, _ in b], atol=1e-5, rtol=0)
    assert not np.allclose([x for x, _ in a], [x for x, _ in clean.loglikelihood(_ll(n))], atol=1e-3)


# ------------------------------------------------------------------ global token permutation


def test_tokperm_global_moves_tokens_across_views_and_keeps_row_ends(vlm):
    from lmms_ac.robustness import parse_perturbation
    from lmms_ac.robustness.token_ops import permute_tokens

    for image in images(4):
        (clean,) = vlm.encode_images([image])
        (perm,) = vlm.encode_images([image], [_hook(vlm, "tokperm_global")])
        (again,) = vlm.encode_images([image], [_hook(vlm, "tokperm_global")])
        assert torch.equal(perm, again)  # seeded by (seed, task, doc, image)
        views = vlm.token_views(image)
        row_end = views == -1
        assert row_end.any() and torch.equal(clean[row_end], perm[row_end])  # row ends in place
        assert _rows(clean[~row_end]) == _rows(perm[~row_end])  # the same tokens, all of them
        base = views == 0
        assert _rows(clean[base]) != _rows(perm[base])  # tokens left the base view: across views
        # exactly one permutation of every non-row-end token, drawn from the image's generator
        p = parse_perturbation("tokperm_global")
        ctx = p.context("nx", 3, vlm.vision.grid, vlm.vision.patch_size, image_index=0)
        assert torch.equal(perm, permute_tokens(clean, ctx.generator(), row_end))


def test_tokperm_global_differs_from_per_view_tokperm_on_tiles(vlm):
    image = images(1)[0]
    (within,) = vlm.encode_images([image], [_hook(vlm, "tokperm")])
    (across,) = vlm.encode_images([image], [_hook(vlm, "tokperm_global")])
    assert not torch.equal(within, across)


def test_tokperm_global_is_tokperm_on_one_view():
    """On LLaVA-1.5's single grid (no views), with or without separator rows: the same draw for the same seed."""
    from lmms_ac.perturb_bridge import HookFactory

    square = types.SimpleNamespace(vision=types.SimpleNamespace(grid=(4, 4), patch_size=8))
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1))
    for seed in (0, 3):
        for doc in (0, 7):
            glob = HookFactory(square, perturbation="tokperm_global", seed=seed).for_request("mme", doc)
            plain = HookFactory(square, perturbation="tokperm", seed=seed).for_request("mme", doc)
            assert torch.equal(glob.tokens(x, 1), plain.tokens(x, 1))
            assert not torch.equal(glob.tokens(x, 1), x)
    from lmms_ac.robustness import parse_perturbation

    mask = torch.ones(20, dtype=torch.bool)
    mask[[4, 9, 14, 19]] = False  # separator rows stay
    y = torch.randn(20, 6)
    g, t = parse_perturbation("tokperm_global_s2"), parse_perturbation("tokperm_s2")
    out = g(y, g.context("mme", 5, (4, 4), 8, visual_mask=mask))
    assert torch.equal(out, t(y, t.context("mme", 5, (4, 4), 8, visual_mask=mask)))
    assert torch.equal(out[~mask], y[~mask])


def test_tokperm_global_string_form_and_task_names_read_back():
    from lmms_ac.robustness import parse_perturbation
    from lmms_ac.robustness.catalogue import GlobalTokenPermutation, TokenPermutation
    from lmms_ac.robustness.names import perturbation_for_task

    p = parse_perturbation("tokperm_global_s3")
    assert isinstance(p, GlobalTokenPermutation) and p.seed == 3 and p.to_string() == "tokperm_global_s3"
    assert isinstance(parse_perturbation("tokperm_s3"), TokenPermutation)
    assert p.on_tiles and p.stage == "tokens" and p.stochastic
    assert perturbation_for_task("mme_tokperm_global_s2") == p.with_seed(2)
    assert perturbation_for_task("mme_tokperm_s2") == parse_perturbation("tokperm_s2")


def test_tokperm_global_is_an_opt_in_variant_family():
    from lmms_ac.robustness import tasks as T
    from lmms_ac.robustness.variants import VARIANTS, selected_families

    family = VARIANTS.get("tokperm_global")
    assert not family.default and family.seeds == 5
    assert "tokperm_global" not in [f.name for f in selected_families("default")]
    specs = T.task_specs(bases=["mme"], families=[family])
    assert [s.name for s in specs] == ["mme_tokperm_global"] + [f"mme_tokperm_global_s{k}" for k in range(1, 5)]


@pytest.mark.parametrize("batch", [1, 8])
def test_tokperm_global_is_the_same_shared_or_not_and_at_any_batch(next_dir, batch):
    _same_at_any_batch_and_sharing(next_dir, "tokperm_global", batch)
