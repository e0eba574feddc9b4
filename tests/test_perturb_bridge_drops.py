"""The model-side PatchDrop hook applies exactly the catalogue's drop and records the cells removed."""

from __future__ import annotations

import types

import pytest
import torch

from lmms_ac.perturb_bridge import HookFactory


class Peaked:
    def __call__(self, pixels):
        m = torch.full((4, 4), 1.0)
        m[1, 2] = 16.0
        return m


def _factory(perturbation):
    vlm = types.SimpleNamespace(vision=types.SimpleNamespace(grid=(4, 4), patch_size=8))
    return HookFactory(vlm, perturbation=perturbation)


@pytest.mark.parametrize("form", ["pdrop_random50", "pdrop_salient50", "pdrop_nonsalient50_count"])
def test_hook_equals_catalogue_and_records_fraction(form):
    from lmms_ac.robustness import set_default_saliency

    set_default_saliency(Peaked())
    try:
        f = _factory(form)
        x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
        hooks = f.for_request("mme", 7)
        y = hooks.image(x, 0)
        p = f.default
        want = p(x, p.context("mme", 7, (4, 4), 8, image_index=0))
        assert torch.equal(y, want)
        rec = f.drops.summary()["mme"]
        assert rec["images"] == 1
        assert rec["cells_dropped"] == pytest.approx(
            float(p.drop_mask(x, p.context("mme", 7, (4, 4), 8)).float().mean())
        )
        if form == "pdrop_salient50":  # half the mass is one cell: one cell of 16 goes
            assert rec["cells_dropped"] == pytest.approx(1 / 16)
        hooks.image(x, 0)
        assert f.drops.summary()["mme"]["images"] == 2
    finally:
        set_default_saliency(None)
