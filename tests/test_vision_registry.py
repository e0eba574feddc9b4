"""The representation registry: spec strings, families built from tiny local towers, the token contract."""

from __future__ import annotations

import pytest
import torch

from lmms_ac.registry import UnknownEntryError
from lmms_ac.testing.datasets import sample_images
from lmms_ac.testing.towers import make_clip_tower, make_siglip_tower
from lmms_ac.vision import FAMILIES, load_representation, parse_spec


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    return {
        "clip": make_clip_tower(str(root / "clip-vit-tiny")),
        "siglip": make_siglip_tower(str(root / "siglip-tiny")),
    }


def test_spec_grammar():
    known = set(FAMILIES.names())
    s = parse_spec("clip:openai/clip-vit-large-patch14-336?layer=-1", known)
    assert (s.family, s.target, s.opts) == ("clip", "openai/clip-vit-large-patch14-336", {"layer": "-1"})
    assert parse_spec("openai/clip-vit-large-patch14-336", known).family == "clip"  # original LLaVA's mm_vision_tower
    assert parse_spec("google/siglip-base-patch16-224", known).family == "siglip"
    assert str(parse_spec("siglip:google/siglip-base-patch16-224", known)) == "siglip:google/siglip-base-patch16-224"


def test_unknown_family_suggests_close_name():
    with pytest.raises(UnknownEntryError, match="did you mean 'clip'"):
        parse_spec("clipp:openai/clip-vit-large-patch14", set(FAMILIES.names()))
    with pytest.raises(ValueError, match="cannot tell the family"):
        parse_spec("someone/mystery-encoder", set(FAMILIES.names()))


def test_missing_local_tower_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_representation(f"clip:{tmp_path}/no-such-tower")


@pytest.mark.parametrize("family,prefix", [("clip", 1), ("siglip", 0)])
def test_family_returns_patch_tokens_of_layer(towers, family, prefix):
    rep = load_representation(f"{family}:{towers[family]}")
    assert rep.grid == (4, 4) and rep.patch_size == 8 and rep.image_size == 32
    images = sample_images(3)  # assorted sizes and modes
    pixels = rep.preprocess(images)
    assert pixels.shape == (3, 3, 32, 32)
    tokens = rep.encode(pixels)
    assert tokens.shape == (3, rep.num_tokens, rep.hidden_size)
    with torch.no_grad():
        hidden = rep.model(pixels, output_hidden_states=True).hidden_states[-2]
    assert torch.equal(tokens, hidden[:, prefix:])  # layer -2, no CLS
    # pixels() + normalize() reproduce preprocess() (the hook path used by image perturbations)
    assert torch.allclose(rep.normalize(rep.pixels(images)), pixels, atol=1e-5)


def test_layer_option_in_spec(towers):
    rep = load_representation(f"clip:{towers['clip']}?layer=-1")
    assert rep.select_layer == -1
    with pytest.raises(ValueError, match="out of range"):
        load_representation(f"clip:{towers['clip']}?layer=9")
