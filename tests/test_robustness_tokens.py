"""Token- and hidden-stage perturbations: permutation, keep-one-group, scaled noise."""

import pytest
import torch

from lmms_ac.robustness import (
    GroupNoise,
    KeepGroup,
    LayerNoise,
    ModalityNoise,
    PerturbationContext,
    TokenPermutation,
)
from lmms_ac.robustness.grid import block_bounds, group_indices
from lmms_ac.robustness.noise import uniform_noise


def ctx(grid=(5, 6), doc_id=0, mask=None, seed=0):
    return PerturbationContext(task="mme", doc_id=doc_id, seed=seed, grid=grid, patch_size=14, visual_mask=mask)


def tokens(n, d=8):
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    x[:, 0] = torch.arange(n, dtype=torch.float32)  # row id
    return x


@pytest.mark.parametrize("n", [3, 4, 5, 30, 576])
def test_token_permutation_is_a_real_permutation(n):
    x = tokens(n)
    for doc_id in range(5):
        y = TokenPermutation().apply(x, ctx(grid=(1, n), doc_id=doc_id))
        order = y[:, 0].long()
        assert sorted(order.tolist()) == list(range(n))  # multiset kept
        assert torch.equal(y, x[order])  # rows moved whole
        assert not torch.equal(order, torch.arange(n))


def test_token_permutation_keeps_separator_tokens_in_place():
    x = tokens(12)
    patch = torch.ones(12, dtype=torch.bool)
    patch[[3, 7, 11]] = False  # e.g. newline tokens after each row
    y = TokenPermutation().apply(x, ctx(grid=(3, 3), mask=patch))
    assert torch.equal(y[~patch], x[~patch])
    assert sorted(y[patch, 0].tolist()) == sorted(x[patch, 0].tolist())
    assert not torch.equal(y, x)


def test_keep_group_returns_that_group_in_order():
    x = tokens(30)  # grid 5 x 6, m = 2: rows [0, 3) [3, 5), cols [0, 3) [3, 6)
    y = KeepGroup(m=2, group=3).apply(x, ctx())
    assert y[:, 0].long().tolist() == [r * 6 + c for r in (3, 4) for c in (3, 4, 5)]
    assert torch.equal(y, x[y[:, 0].long()])


@pytest.mark.parametrize("grid,m", [((5, 6), 2), ((24, 24), 5), ((16, 16), 4), ((7, 3), 3)])
def test_groups_partition_the_grid(grid, m):
    seen = torch.cat([group_indices(grid, m, g) for g in range(m * m)])
    assert sorted(seen.tolist()) == list(range(grid[0] * grid[1]))
    sizes = torch.diff(torch.tensor(block_bounds(grid[0], m)))
    assert int(sizes.max() - sizes.min()) <= 1


def test_keep_group_with_separator_tokens_selects_patch_rows():
    x = tokens(12)
    patch = torch.ones(12, dtype=torch.bool)
    patch[[3, 7, 11]] = False
    y = KeepGroup(m=3, group=4).apply(x, ctx(grid=(3, 3), mask=patch))
    assert y[:, 0].tolist() == [5.0]  # centre patch (1, 1) is row 5 once separators are skipped


def test_keep_group_rejects_wrong_token_count():
    with pytest.raises(ValueError, match="visual tokens"):
        KeepGroup(m=2, group=0).apply(tokens(29), ctx())


def expected_noise(x, rows, c):
    comp = x[rows].float()
    return comp + uniform_noise(comp.shape, c.generator()) * comp.abs().mean()


def test_group_noise_scaled_by_mean_abs_of_group():
    x = tokens(30) * 3
    c = ctx(doc_id=4)
    y = GroupNoise(m=2, group=1).apply(x, c)
    rows = group_indices((5, 6), 2, 1)
    others = torch.ones(30, dtype=torch.bool)
    others[rows] = False
    assert torch.equal(y[others], x[others])
    assert torch.allclose(y[rows], expected_noise(x, rows, c))
    u = (y[rows] - x[rows]) / x[rows].abs().mean()
    assert float(u.abs().max()) <= 1.0 and float(u.abs().max()) > 0.9


def test_layer_noise_on_all_positions():
    h = torch.randn(20, 16)
    c = ctx()
    y = LayerNoise(layer=3).apply(h, c)
    assert torch.allclose(y, expected_noise(h, torch.arange(20), c))
    assert LayerNoise(layer=3).layer == 3


@pytest.mark.parametrize("modality", ["image", "text"])
def test_modality_noise_only_on_that_modality(modality):
    h = torch.randn(20, 16)
    visual = torch.zeros(20, dtype=torch.bool)
    visual[4:13] = True
    rows = visual if modality == "image" else ~visual
    c = ctx(mask=visual)
    y = ModalityNoise(modality=modality, layer=0).apply(h, c)
    assert torch.equal(y[~rows], h[~rows])
    assert torch.allclose(y[rows], expected_noise(h, rows, c))


def test_modality_noise_needs_visual_mask():
    with pytest.raises(ValueError, match="visual_mask"):
        ModalityNoise(modality="image", layer=0).apply(torch.randn(5, 4), ctx())


def test_noise_keeps_dtype():
    h = torch.randn(10, 8).to(torch.bfloat16)
    assert LayerNoise(layer=0).apply(h, ctx()).dtype == torch.bfloat16
