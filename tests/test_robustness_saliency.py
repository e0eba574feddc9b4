"""Saliency: CLS attention of an injected tiny random ViT, area mapping, salient selection, caching."""

import pytest
import torch

from lmms_ac.robustness import (
    CachedSaliency,
    NonSalientPatchDrop,
    PerturbationContext,
    SaliencyModel,
    SalientPatchDrop,
    ViTCLSAttention,
    default_saliency,
    set_default_saliency,
)
from lmms_ac.robustness.saliency import area_resize, salient_cells


@pytest.fixture(scope="module")
def tiny_vit():
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    return ViTCLSAttention(ViTModel(config, add_pooling_layer=False))


class Counting:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, pixels):
        self.calls += 1
        return self.model(pixels)


def pixels(seed=0, size=28):
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def test_tiny_vit_cls_attention(tiny_vit):
    assert isinstance(tiny_vit, SaliencyModel)
    a = tiny_vit(pixels(size=56))  # resized to the ViT's 32 px input -> 4 x 4 patches
    assert a.shape == (4, 4) and bool((a >= 0).all()) and float(a.sum()) <= 1.0 + 1e-5
    b = ViTCLSAttention(tiny_vit.model, input_size=48)(pixels())  # interpolated position embeddings
    assert b.shape == (6, 6)


def test_saliency_is_cached_in_memory(tiny_vit):
    model = Counting(tiny_vit)
    cache = CachedSaliency(model, maxsize=2)
    first = cache(pixels(), (7, 7))
    second = cache(pixels(), (7, 7))
    assert model.calls == 1 and torch.equal(first, second) and first.shape == (7, 7)
    cache(pixels(), (14, 14))  # another grid is another entry
    cache(pixels(1), (7, 7))  # evicts the oldest (bounded LRU)
    assert model.calls == 3
    cache(pixels(), (7, 7))
    assert model.calls == 4


def test_saliency_disk_cache(tiny_vit, tmp_path):
    model = Counting(tiny_vit)
    first = CachedSaliency(model, cache_dir=tmp_path)(pixels(), (7, 7))
    assert len(list(tmp_path.glob("*.npy"))) == 1 and not list(tmp_path.glob("*.tmp"))
    again = CachedSaliency(model, cache_dir=tmp_path)(pixels(), (7, 7))  # a fresh process's cache
    assert model.calls == 1 and torch.equal(first, again)


def test_salient_patchdrop_with_tiny_vit_end_to_end(tiny_vit):
    model = Counting(tiny_vit)
    ctx = PerturbationContext(task="mme_pdrop_salient30", doc_id=0, seed=0, grid=(7, 7), patch_size=4)
    x = pixels() * 0.9 + 0.05
    sal = SalientPatchDrop(ratio=0.3, by="count", saliency=model)
    non = NonSalientPatchDrop(ratio=0.7, by="count", saliency=sal.saliency)  # share one cache
    ys, yn = sal.apply(x, ctx), non.apply(x, ctx)
    dropped_s = (ys == 0).all(0)[::4, ::4]
    dropped_n = (yn == 0).all(0)[::4, ::4]
    # by count, salient 0.3 (top 15 cells) and non-salient 0.7 (bottom 34 cells) partition the grid
    assert int(dropped_s.sum()) == 15 and bool((dropped_s ^ dropped_n).all())
    assert model.calls == 1


def test_area_resize_is_area_averaging():
    a = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    down = area_resize(a, (2, 2))
    assert torch.allclose(down, torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    up = area_resize(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), (4, 4))
    assert torch.equal(up, torch.tensor([[1.0, 2.0], [3.0, 4.0]]).repeat_interleave(2, 0).repeat_interleave(2, 1))
    odd = area_resize(torch.rand(14, 14), (24, 24))
    assert odd.shape == (24, 24)
    assert float(area_resize(a, (3, 5)).mean()) == pytest.approx(float(a.mean()), rel=1e-5)


def test_salient_cells_count_and_mass():
    s = torch.tensor([[0.5, 0.2], [0.2, 0.1]])
    assert salient_cells(s, 0.5, by="count").tolist() == [[True, True], [False, False]]  # ties: lower index first
    assert salient_cells(s, 0.5, by="count", end="bottom").tolist() == [[False, True], [False, True]]
    assert salient_cells(s, 0.3, end="bottom").tolist() == [[False, True], [False, True]]  # 0.1 + 0.2 >= 0.3
    assert salient_cells(s, 0.1, end="bottom").tolist() == [[False, False], [False, True]]
    assert salient_cells(s, 0.5, by="mass").tolist() == [[True, False], [False, False]]
    assert salient_cells(s, 0.6, by="mass").tolist() == [[True, True], [False, False]]


def test_default_saliency_is_injectable():
    class Flat:
        def __call__(self, pixels):
            return torch.ones(2, 2)

    try:
        set_default_saliency(Flat())
        assert isinstance(default_saliency(), CachedSaliency)
        ctx = PerturbationContext(task="t", doc_id=0, seed=0, grid=(2, 2), patch_size=14)
        y = SalientPatchDrop(ratio=0.5).apply(pixels(size=28) + 0.1, ctx)
        assert int((y == 0).all(0)[::14, ::14].sum()) == 2
    finally:
        set_default_saliency(None)
