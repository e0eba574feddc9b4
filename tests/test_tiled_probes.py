"""Probes on LLaVA-NeXT's/OneVision's tiled input (docs/METHODS.md#tiled-inputs-llava-next-and-onevision):
the global token permutation across the base view and the tiles (row-end tokens in place; ``tokperm`` on
one view); PatchDrop per view (each view's own cells zeroed before normalisation, per-view saliency and
seeds, the drop tally; equal to transformers' generate on hand-dropped pixel values); token groups and
group noise per view. Each is the LLaVA-1.5 definition on one view and the same at any batch size and with
prefix sharing on or off."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_requests import build_tiny_tiled, generate_requests, loglikelihood_requests, tiny_model

QUESTIONS = ["Is there a dog in this image?", "What color is the car?", "How many people are there?", "Describe it."]
# square (4 full tiles), wide, tall, and (200, 160): 2 x 2 tiles on NeXT, pooled by OneVision
SIZES = [(64, 64), (64, 42), (42, 64), (200, 160)]


def images(n: int, seed: int = 0):
    rng = np.random.RandomState(seed)
    out = [Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")) for w, h in SIZES[:n]]
    return [im.convert(mode) for im, mode in zip(out, ["RGB", "L", "RGBA", "RGB"])]


@pytest.fixture(scope="module", params=["llava_next", "llava_onevision"])
def next_dir(request, tmp_path_factory) -> str:
    return build_tiny_tiled(request.param, tmp_path_factory)


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


def _model(next_dir, share: bool, batch: int, **kw):
    return tiny_model(next_dir, _docs(), share, batch, **kw)


def _gen():
    return generate_requests(_docs(), 6)


def _ll():
    return loglikelihood_requests(_docs())


@pytest.fixture(scope="module")
def clean_ll(next_dir):
    """The clean log-likelihoods of ``_ll``: what a probe must change."""
    return [x for x, _ in _model(next_dir, False, 8).loglikelihood(_ll())]


def _same_at_any_batch_and_sharing(next_dir, clean_ll, form: str, batch: int) -> None:
    shared = _model(next_dir, True, batch, perturbation=form)
    plain = _model(next_dir, False, 1, perturbation=form)
    assert shared.generate_until(_gen()) == plain.generate_until(_gen())
    a, b = shared.loglikelihood(_ll()), plain.loglikelihood(_ll())
    assert np.allclose([x for x, _ in a], [x for x, _ in b], atol=1e-5, rtol=0)
    assert not np.allclose([x for x, _ in a], clean_ll, atol=1e-3)


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
def test_tokperm_global_is_the_same_shared_or_not_and_at_any_batch(next_dir, clean_ll, batch):
    _same_at_any_batch_and_sharing(next_dir, clean_ll, "tokperm_global", batch)


# ------------------------------------------------------------------ PatchDrop per view


class MeanSaliency:
    """A saliency model that depends on the pixels: the channel mean (so every view has its own map)."""

    model_id = "test-mean"

    def __call__(self, pixels):
        return pixels.mean(0) + 1e-3


@pytest.fixture
def fake_saliency():
    from lmms_ac.robustness import set_default_saliency

    set_default_saliency(MeanSaliency())
    yield
    set_default_saliency(None)


def _pixel_values(vlm, ims, hooks=()):
    """The pixel values ``[B, V_max, 3, S, S]`` the tiled model hands transformers' get_image_features."""
    (model,) = vlm.feature_source
    seen = []
    original = model.get_image_features

    def spy(pixel_values, **kw):
        seen.append(pixel_values.detach().clone())
        return original(pixel_values=pixel_values, **kw)

    model.get_image_features = spy
    try:
        vlm.encode_images(ims, hooks, [0] * len(ims))  # one image per request: image index 0
    finally:
        del model.get_image_features
    return seen[0]


def _unnormalise(vlm, pv):
    p = vlm.image_processor
    return pv * torch.tensor(p.image_std).view(3, 1, 1) + torch.tensor(p.image_mean).view(3, 1, 1)


def _cells(vlm, changed_pixels: torch.Tensor) -> torch.Tensor:
    """Bool ``[gh, gw]``: the cells of one view where any pixel of ``changed_pixels [3, S, S]`` is True."""
    gh, gw = vlm.vision.grid
    c, s, _ = changed_pixels.shape
    return changed_pixels.reshape(c, gh, s // gh, gw, s // gw).permute(1, 3, 0, 2, 4).reshape(gh, gw, -1).any(-1)


def _view_contexts(vlm, form, doc, n_views):
    from lmms_ac.robustness import parse_perturbation

    p = parse_perturbation(form)
    grid, patch = vlm.vision.grid, vlm.vision.patch_size
    return p, [p.context("nx", doc, grid, patch, image_index=0, view=k) for k in range(n_views)]


@pytest.mark.parametrize("form", ["pdrop_random50", "pdrop_salient30", "pdrop_nonsalient40_count"])
def test_pdrop_zeroes_each_views_own_cells_and_nothing_else(vlm, form, fake_saliency):
    from lmms_ac.perturb_bridge import HookFactory
    from lmms_ac.robustness.image_ops import cells_to_pixels

    ims = images(4)
    factory = HookFactory(vlm, perturbation=form)
    hooks = [factory.for_request("nx", doc) for doc in range(len(ims))]
    clean, dropped = _pixel_values(vlm, ims), _pixel_values(vlm, ims, hooks)
    n_cells, fractions = vlm.vision.grid[0] * vlm.vision.grid[1], []
    for doc, image in enumerate(ims):
        n = vlm.num_views((image.height, image.width))
        assert n >= 3 and torch.equal(clean[doc, n:], dropped[doc, n:])  # the batch's padding slots untouched
        p, contexts = _view_contexts(vlm, form, doc, n)
        masks = []
        for k in range(n):
            x = _unnormalise(vlm, clean[doc, k])  # the view in [0, 1], as the hook saw it
            want = p.drop_mask(x, contexts[k])  # the 1.5 rule on this view's grid, with this view's seed
            changed = _cells(vlm, clean[doc, k] != dropped[doc, k])
            assert not (changed & ~want).any(), (doc, k)  # no pixel outside the view's dropped cells changes
            y = _unnormalise(vlm, dropped[doc, k])
            inside = cells_to_pixels(want, y.shape[-2:]).expand_as(y)
            assert y[inside].abs().max() < 1e-5, (doc, k)  # zeroed in [0, 1], before normalisation
            already_black = _cells(vlm, x.abs() < 1e-5) & ~_cells(vlm, x.abs() >= 1e-5)  # a padded tile's margin
            assert torch.equal(changed | (want & already_black), want), (doc, k)
            if form.startswith("pdrop_random") or form.endswith("_count"):
                ratio = 0.5 if form == "pdrop_random50" else 0.4
                assert int(want.sum()) == round(ratio * n_cells)  # round(ratio * N) cells of each view
            masks.append(want)
        assert len({tuple(m.reshape(-1).tolist()) for m in masks}) > 1  # the views drop different cells
        fractions.append(float(torch.stack(masks).float().mean()))
    summary = factory.drops.summary()["nx"]  # the tally: one entry per image, over all its views' cells
    assert summary["images"] == len(ims) and summary["cells_dropped"] == pytest.approx(np.mean(fractions))


@pytest.mark.parametrize("form", ["pdrop_random30", "pdrop_salient50", "pdrop_nonsalient30"])
def test_pdrop_on_one_view_is_the_15_definition(vlm, form, fake_saliency):
    """The hook on a one-view stack equals the LLaVA-1.5 hook on that view; the base view draws what the
    image draws on one grid (view 0 keeps the image's seed)."""
    from lmms_ac.perturb_bridge import HookFactory
    from lmms_ac.robustness import parse_perturbation

    square = types.SimpleNamespace(vision=types.SimpleNamespace(grid=vlm.vision.grid, patch_size=vlm.vision.patch_size))
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4))
    hook = HookFactory(square, perturbation=form).for_request("nx", 2).image
    assert torch.equal(hook(x[None], 1)[0], hook(x, 1))
    p = parse_perturbation(form)
    ctx = p.context("nx", 2, vlm.vision.grid, vlm.vision.patch_size, image_index=1)
    assert torch.equal(hook(x, 1), p(x, ctx))  # the 1.5 definition, unchanged
    assert ctx.stable_seed() == p.context("nx", 2, (4, 4), 8, image_index=1, view=0).stable_seed()
    assert ctx.stable_seed() != p.context("nx", 2, (4, 4), 8, image_index=1, view=1).stable_seed()
    # on the tiled model, the base view is dropped as the 1.5 rule drops that view
    image = images(1)[0]
    clean, dropped = (_pixel_values(vlm, [image], hooks) for hooks in ((), [_hook(vlm, form, 2)]))
    base = _unnormalise(vlm, clean[0, 0])
    base_ctx = p.context("nx", 2, vlm.vision.grid, vlm.vision.patch_size, image_index=0)
    assert torch.equal(_cells(vlm, clean[0, 0] != dropped[0, 0]), p.drop_mask(base, base_ctx))


def test_pdrop_reaches_the_tokens_of_every_view(vlm):
    image = images(4)[3]  # (200, 160): pooled on OneVision, where PatchDrop acts on the views before pooling
    (clean,) = vlm.encode_images([image])
    (dropped,) = vlm.encode_images([image], [_hook(vlm, "pdrop_random50")])
    views = vlm.token_views(image)
    for view in range(int(views.max()) + 1):
        assert not torch.equal(clean[views == view], dropped[views == view])
    assert torch.equal(clean[views == -1], dropped[views == -1])  # the image_newline vectors


def test_pdrop_equals_transformers_on_the_hand_dropped_views(vlm, next_dir):
    """Greedy output under pdrop_random50 equals LlavaNext/OnevisionForConditionalGeneration.generate given
    the processor's pixel values with each view's cells (drawn from its seed) set to a black pixel."""
    import transformers
    from transformers import AutoProcessor

    from lmms_ac.perturb_bridge import HookFactory
    from lmms_ac.robustness.image_ops import cells_to_pixels, random_cells
    from lmms_ac.vlm.prompts import build_prompt

    cls = {
        "llava_next": transformers.LlavaNextForConditionalGeneration,
        "llava_onevision": transformers.LlavaOnevisionForConditionalGeneration,
    }[vlm.kind]
    model = cls.from_pretrained(next_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(next_dir)
    processor.tokenizer.padding_side = "left"
    ims = images(4)
    prompts = [build_prompt(q, 1, "chat_template", vlm.tokenizer) for q in QUESTIONS]
    inputs = processor(text=prompts, images=ims, return_tensors="pt", padding=True)
    pv = inputs["pixel_values"].clone()
    ip = processor.image_processor
    black = (-torch.tensor(ip.image_mean) / torch.tensor(ip.image_std)).view(3, 1, 1)
    for doc, image in enumerate(ims):
        p, contexts = _view_contexts(vlm, "pdrop_random50", doc, vlm.num_views((image.height, image.width)))
        for k, ctx in enumerate(contexts):
            cells = random_cells(ctx.grid, p.ratio, ctx.generator())
            inside = cells_to_pixels(cells, pv.shape[-2:]).expand(3, -1, -1)
            pv[doc, k] = torch.where(inside, black, pv[doc, k])
    inputs["pixel_values"] = pv
    with torch.no_grad():
        theirs = model.generate(**inputs, max_new_tokens=10, do_sample=False)[:, inputs["input_ids"].shape[1] :]
    factory = HookFactory(vlm, perturbation="pdrop_random50")
    hooks = [factory.for_request("nx", doc) for doc in range(len(ims))]
    ours = vlm.generate(prompts, [[im] for im in ims], hooks, max_new_tokens=10)
    assert ours == processor.batch_decode(theirs, skip_special_tokens=True)
    assert ours != vlm.generate(prompts, [[im] for im in ims], max_new_tokens=10)  # the drop changed something


def test_pdrop_on_tiles_is_the_same_shared_or_not_and_at_any_batch(next_dir, clean_ll):
    _same_at_any_batch_and_sharing(next_dir, clean_ll, "pdrop_random50", 8)  # per-view seeds: no batch position


def test_a_probe_that_does_not_say_how_it_acts_on_tiles_is_refused(vlm):
    """A plugin probe with ``on_tiles`` False (the default) is refused with the message that lists what runs."""
    from dataclasses import dataclass

    from lmms_ac.perturb_bridge import HookFactory
    from lmms_ac.robustness.base import Perturbation

    @dataclass(frozen=True, kw_only=True)
    class Invert(Perturbation):
        name = "invert_test"
        stage = "image"
        form = "invert_test"

        def apply(self, x, ctx):
            return 1.0 - x

    with pytest.raises(ValueError, match="not defined on LLaVA-NeXT's/OneVision's tiled input") as err:
        HookFactory(vlm)._check(Invert())
    for runs in ("PatchDrop (per view", "tokperm_global", "tokgroup", "toknoise"):
        assert runs in str(err.value)


# ------------------------------------------------------------------ token groups and group noise per view


def _square_layout_groups(m: int, group: int) -> list:
    """Group ``group`` of each view of the (64, 64) image on NeXT and OneVision, from its known layout: the base
    view's 16 tokens, then the 8 x 8 tiled grid of 2 x 2 full tiles of 4 x 4, each row closed by a row end."""
    from lmms_ac.robustness.grid import group_indices

    bi, bj = divmod(group, m)
    size = 4 // m
    rows = group_indices((4, 4), m, group).tolist()  # the base view: the LLaVA-1.5 definition
    for r in range(8):
        for c in range(8):
            if bi * size <= r % 4 < (bi + 1) * size and bj * size <= c % 4 < (bj + 1) * size:
                rows.append(16 + r * 9 + c)
    return sorted(rows)


@pytest.mark.parametrize("m,group", [(2, 0), (2, 3), (4, 5)])
def test_tokgroup_keeps_each_views_group_and_the_row_ends(vlm, m, group):
    image = images(1)[0]
    (clean,) = vlm.encode_images([image])
    views = vlm.token_views(image)
    assert len(clean) == 16 + 8 * 9  # the layout _square_layout_groups assumes
    (kept,) = vlm.encode_images([image], [_hook(vlm, f"tokgroup_m{m}_g{group}")])
    keep = torch.zeros(len(clean), dtype=torch.bool)
    keep[_square_layout_groups(m, group)] = True
    assert torch.equal(kept, clean[keep | (views == -1)])  # in their order, row ends untouched


def test_tokgroup_on_cut_tiles_and_pooled_grids_splits_each_views_rectangle(vlm):
    from lmms_ac.robustness.token_ops import view_grids

    for image in images(4):
        (clean,) = vlm.encode_images([image])
        views = vlm.token_views(image)
        grids = view_grids(views, vlm.vision.grid)
        assert [int((views == v).sum()) for v in range(len(grids))] == [g.numel() for g in grids]
        assert tuple(grids[0].shape) == vlm.vision.grid
        pieces = [vlm.encode_images([image], [_hook(vlm, f"tokgroup_m2_g{g}")])[0] for g in range(4)]
        row_ends = int((views == -1).sum())
        assert sum(len(x) - row_ends for x in pieces) == int((views >= 0).sum())  # the groups tile every view
        for rect in grids:  # here every view has 2 rows and columns or more: no group of a view is empty
            assert rect.shape[0] >= 2 and rect.shape[1] >= 2


def test_toknoise_noises_the_group_of_every_view_only(vlm):
    from lmms_ac.robustness import parse_perturbation
    from lmms_ac.robustness.noise import add_component_noise

    image = images(1)[0]
    (clean,) = vlm.encode_images([image])
    (noisy,) = vlm.encode_images([image], [_hook(vlm, "toknoise_m2_g1")])
    (again,) = vlm.encode_images([image], [_hook(vlm, "toknoise_m2_g1")])
    assert torch.equal(noisy, again)
    rows = torch.tensor(_square_layout_groups(2, 1))
    changed = (clean != noisy).any(-1)
    assert torch.equal(torch.nonzero(changed).reshape(-1), rows)  # the group of every view, nothing else
    p = parse_perturbation("toknoise_m2_g1")
    ctx = p.context("nx", 3, vlm.vision.grid, vlm.vision.patch_size, image_index=0)
    assert torch.equal(noisy, add_component_noise(clean, rows, ctx.generator()))  # one component, one draw


@pytest.mark.parametrize("form", ["tokgroup_m2_g1", "tokgroup_m4_g6", "toknoise_m2_g3", "toknoise_m4_g9_s2"])
def test_token_groups_on_one_view_are_the_15_definition(form):
    from lmms_ac.robustness import parse_perturbation

    p = parse_perturbation(form)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(2))
    one_view = torch.zeros(16, dtype=torch.long)
    with_views = p(x, p.context("mme", 4, (4, 4), 8, views=one_view))
    assert torch.equal(with_views, p(x, p.context("mme", 4, (4, 4), 8)))


@pytest.mark.parametrize("form", ["toknoise_m2_g1", "tokgroup_m2_g2"])
def test_token_groups_on_tiles_are_the_same_shared_or_not_and_at_any_batch(next_dir, clean_ll, form):
    _same_at_any_batch_and_sharing(next_dir, clean_ll, form, 8)


def test_view_grids_read_rectangles_from_the_labels():
    from lmms_ac.robustness.token_ops import split_bounds, view_grids

    # base view 2 x 2, then two lines of [tile 1 x2 | tile 2 x1 | row end]
    views = torch.tensor([0, 0, 0, 0, 1, 1, 2, -1, 1, 1, 2, -1])
    grids = view_grids(views, (2, 2))
    assert [g.tolist() for g in grids] == [[[0, 1], [2, 3]], [[4, 5], [8, 9]], [[6], [10]]]
    assert split_bounds(3, 4) == [0, 1, 2, 3, 3] and split_bounds(5, 2) == [0, 3, 5]  # empty last blocks
    with pytest.raises(ValueError, match="do not form a rectangle"):
        view_grids(torch.tensor([0, 0, 0, 0, 1, 1, -1, 1, -1]), (2, 2))


def test_tokgroup_group_beyond_a_cut_tiles_rows_is_empty_there(vlm):
    image = images(2)[1]  # (64, 42): tiles cut to 3 rows of 4, so the 4th row block of m = 4 is empty on them
    views = vlm.token_views(image)
    (clean,) = vlm.encode_images([image])
    (kept,) = vlm.encode_images([image], [_hook(vlm, "tokgroup_m4_g12")])
    n_row_ends = int((views == -1).sum())
    assert len(kept) == 1 + n_row_ends  # the base view's one token of block (3, 0), and the row ends
    assert torch.equal(kept[0], clean[12])  # base view row 3, column 0
