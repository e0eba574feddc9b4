"""Image-level perturbations: patch shuffle, PatchDrop (random / salient / non-salient), synthetic."""

import pytest
import torch

from lmms_ac.robustness import (
    NonSalientPatchDrop,
    PatchShuffle,
    PerturbationContext,
    RandomPatchDrop,
    SalientPatchDrop,
    SyntheticImage,
)
from lmms_ac.robustness.grid import cell_bounds, count_for_ratio


def ctx(grid=(7, 7), patch=4, doc_id=0, seed=0):
    return PerturbationContext(task="mme", doc_id=doc_id, seed=seed, grid=grid, patch_size=patch)


def image(size=28, h=None):
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, h or size, size, generator=g) * 0.98 + 0.01  # no zero pixels


def tiles(x, n):
    _, h, w = x.shape
    th, tw = h // n, w // n
    return [x[:, i * th : (i + 1) * th, j * tw : (j + 1) * tw] for i in range(n) for j in range(n)]


@pytest.mark.parametrize("n", [2, 4, 8, 14])
def test_patch_shuffle_only_permutes_intact_tiles(n):
    x = image(56)
    y = PatchShuffle(n=n).apply(x, ctx())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(torch.sort(y.flatten()).values, torch.sort(x.flatten()).values)
    src, dst = tiles(x, n), tiles(y, n)
    mapping = [next(i for i, s in enumerate(src) if torch.equal(s, d)) for d in dst]
    assert sorted(mapping) == list(range(n * n))  # every tile intact, each used once
    assert mapping != list(range(n * n))  # a real shuffle
    assert torch.equal(x, image(56))  # input untouched


def test_patch_shuffle_remainder_border_stays():
    x = image(30, h=31)  # 31 x 30, n = 4 -> tiles 7 x 7, border of 3 rows and 2 columns
    y = PatchShuffle(n=4).apply(x, ctx())
    assert torch.equal(y[:, 28:, :], x[:, 28:, :]) and torch.equal(y[:, :, 28:], x[:, :, 28:])
    src, dst = tiles(x[:, :28, :28], 4), tiles(y[:, :28, :28], 4)
    assert sorted(next(i for i, s in enumerate(src) if torch.equal(s, d)) for d in dst) == list(range(16))
    assert not torch.equal(x, y)


def zeroed_cells(y, grid):
    rows, cols = cell_bounds(y.shape[1], grid[0]), cell_bounds(y.shape[2], grid[1])
    z = torch.zeros(grid, dtype=torch.bool)
    for i in range(grid[0]):
        for j in range(grid[1]):
            cell = y[:, rows[i] : rows[i + 1], cols[j] : cols[j + 1]]
            assert bool((cell == 0).all()) or bool((cell != 0).all()), "cells are dropped whole"
            z[i, j] = bool((cell == 0).all())
    return z


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_random_patchdrop_zeroes_exact_count(ratio):
    x = image(28)
    y = RandomPatchDrop(ratio=ratio).apply(x, ctx())
    z = zeroed_cells(y, (7, 7))
    assert int(z.sum()) == count_for_ratio(ratio, 49) == round(ratio * 49 + 1e-9)
    keep = ~z.repeat_interleave(4, 0).repeat_interleave(4, 1)
    assert torch.equal(y[:, keep], x[:, keep])


def test_random_patchdrop_on_grid_not_dividing_image():
    x = image(30)  # 30 px on a 7 x 7 grid: cell borders i * 30 // 7
    y = RandomPatchDrop(ratio=0.5).apply(x, ctx(grid=(7, 7), patch=4))
    assert int(zeroed_cells(y, (7, 7)).sum()) == 25


class FixedSaliency:
    """A fake saliency model: a fixed 5 x 5 map (mapped onto the 7 x 7 grid by area averaging)."""

    def __init__(self):
        self.calls = 0
        self.map = torch.rand(5, 5, generator=torch.Generator().manual_seed(3))

    def __call__(self, pixels):
        self.calls += 1
        return self.map


@pytest.mark.parametrize("by", ["count", "mass"])
@pytest.mark.parametrize("ratio", [0.1, 0.4, 0.9])
def test_salient_and_nonsalient_drop_from_opposite_ends(ratio, by):
    fake = FixedSaliency()
    x = image(28)
    sal = SalientPatchDrop(ratio=ratio, by=by, saliency=fake)
    non = NonSalientPatchDrop(ratio=ratio, by=by, saliency=fake)
    zs, zn = zeroed_cells(sal.apply(x, ctx()), (7, 7)), zeroed_cells(non.apply(x, ctx()), (7, 7))
    grid_sal = sal.saliency_map(x, ctx()).reshape(-1)
    s_vals, n_vals = grid_sal[zs.reshape(-1)], grid_sal[zn.reshape(-1)]
    kept_s, kept_n = grid_sal[~zs.reshape(-1)], grid_sal[~zn.reshape(-1)]
    assert s_vals.min() >= kept_s.max() if len(kept_s) else True  # salient: the top cells
    assert n_vals.max() <= kept_n.min() if len(kept_n) else True  # non-salient: the bottom cells
    if by == "count":
        assert int(zs.sum()) == int(zn.sum()) == count_for_ratio(ratio, 49)
    else:  # r is the fraction of attention mass removed, for both
        total = float(grid_sal.sum())
        assert float(s_vals.sum()) / total >= ratio - 1e-5 and float(n_vals.sum()) / total >= ratio - 1e-5
        assert float(s_vals.sum() - s_vals.min()) / total < ratio  # the shortest such run
        assert float(n_vals.sum() - n_vals.max()) / total < ratio
    assert sal.dropped_fraction(x, ctx()) == pytest.approx(float(zs.float().mean()))


def test_mass_drops_fewer_salient_cells_than_count_on_a_peaked_map():
    class Peaked:
        def __call__(self, pixels):
            m = torch.full((7, 7), 1.0)
            m[3, 3] = 48.0  # one cell holds half the attention
            return m

    x = image(28)
    mass = SalientPatchDrop(ratio=0.5, saliency=Peaked())
    count = SalientPatchDrop(ratio=0.5, by="count", saliency=Peaked())
    assert mass.by == "mass" and mass.to_string() == "pdrop_salient50"
    assert count.to_string() == "pdrop_salient50_count"
    assert mass.dropped_fraction(x, ctx()) == pytest.approx(1 / 49)
    assert count.dropped_fraction(x, ctx()) == pytest.approx(count_for_ratio(0.5, 49) / 49)
    # non-salient by mass at 0.5: the other half of the mass is the whole background
    non = NonSalientPatchDrop(ratio=0.5, saliency=Peaked())
    assert non.dropped_fraction(x, ctx()) == pytest.approx(48 / 49)
    assert NonSalientPatchDrop(ratio=0.25, saliency=Peaked()).dropped_fraction(x, ctx()) == pytest.approx(24 / 49)


def test_salient_drops_the_most_salient_cells():
    class Corner:
        def __call__(self, pixels):
            m = torch.full((7, 7), 0.01)
            m[:2, :2] = 1.0
            return m

    y = SalientPatchDrop(ratio=0.08, by="count", saliency=Corner()).apply(image(28), ctx())
    z = zeroed_cells(y, (7, 7))
    assert int(z.sum()) == 4 and bool(z[:2, :2].all())


def test_synthetic_is_a_dataset_marker():
    x = image(28)
    p = SyntheticImage()
    assert p.stage == "dataset" and not p.stochastic
    assert torch.equal(p.apply(x, ctx()), x)


def test_image_ops_keep_dtype_and_reject_batches():
    x = image(28).to(torch.bfloat16)
    assert RandomPatchDrop(ratio=0.5).apply(x, ctx()).dtype == torch.bfloat16
    with pytest.raises(ValueError):
        PatchShuffle(n=2).apply(x.unsqueeze(0), ctx())
