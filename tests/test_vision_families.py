"""More representation families built from tiny local towers: OpenCLIP, SigLIP2, DINOv2, feature combinations."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from lmms_ac.testing.datasets import sample_images
from lmms_ac.testing.towers import (
    make_clip_tower,
    make_dinov2_tower,
    make_openclip_tower,
    make_siglip2_naflex_tower,
    make_siglip2_tower,
)
from lmms_ac.vision import FAMILIES, load_representation, parse_spec


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("family-towers")
    return {
        "openclip": make_openclip_tower(str(root / "openclip-vit-tiny")),
        "siglip2": make_siglip2_tower(str(root / "siglip2-tiny-patch8-32")),
        "siglip2-naflex": make_siglip2_naflex_tower(str(root / "siglip2-tiny-naflex")),
        "dinov2": make_dinov2_tower(str(root / "dinov2-tiny")),
        "dinov2-reg": make_dinov2_tower(str(root / "dinov2-tiny-reg"), registers=4),
        "clip": make_clip_tower(str(root / "clip-vit-tiny")),
    }


def test_families_registered_and_inferred():
    assert {"openclip", "siglip2", "dinov2", "concat", "diffusion"} <= set(FAMILIES.names())
    known = set(FAMILIES.names())
    for bare, family in [
        ("laion/CLIP-ViT-L-14-laion2B-s32B-b82K", "openclip"),
        ("google/siglip2-large-patch16-256", "siglip2"),
        ("facebook/dinov2-large", "dinov2"),
        ("runwayml/stable-diffusion-v1-5", "diffusion"),
    ]:
        assert parse_spec(bare, known).family == family


# ------------------------------------------------------------------------------------------- OpenCLIP
def test_openclip_spec_forms():
    from lmms_ac.vision.openclip import resolve_openclip_target

    assert resolve_openclip_target("laion/CLIP-ViT-L-14-laion2B-s32B-b82K") == (
        "hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
        None,
    )
    assert resolve_openclip_target("ViT-L-14@laion2b_s32b_b82k") == ("ViT-L-14", "laion2b_s32b_b82k")
    with pytest.raises(ValueError, match="pretrained tag"):
        resolve_openclip_target("ViT-L-14")  # an architecture alone would be random weights


def test_openclip_local_dir_patch_tokens(towers):
    import open_clip

    rep = load_representation(f"openclip:{towers['openclip']}")
    assert rep.grid == (4, 4) and rep.patch_size == 8 and rep.hidden_size == 32 and rep.image_size == 32
    assert rep.image_spec.mean == pytest.approx((0.5, 0.4, 0.3)) and rep.image_spec.std == pytest.approx(
        (0.2, 0.25, 0.3)
    )
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{towers['openclip']}")
    model.eval()
    images = sample_images(3)
    pixels = rep.preprocess(images)
    # open_clip's own eval transform (resize mode, interpolation, mean/std from preprocess_cfg)
    assert torch.allclose(pixels, torch.stack([preprocess(im.convert("RGB")) for im in images]), atol=1e-6)
    tokens = rep.encode(pixels)
    with torch.no_grad():
        # open_clip's own API: output of residual block 1 of 3 = hidden state -2, CLS dropped
        ref = model.visual.forward_intermediates(pixels, indices=[1], output_fmt="NLC", intermediates_only=True)[
            "image_intermediates"
        ][0]
    assert tokens.shape == (3, 16, 32) and torch.allclose(tokens, ref, atol=1e-6)
    last = load_representation(f"openclip:{towers['openclip']}?layer=-1").encode(pixels)
    with torch.no_grad():
        ref_last = model.visual.forward_intermediates(pixels, indices=[2], output_fmt="NLC", intermediates_only=True)[
            "image_intermediates"
        ][0]
    assert torch.allclose(last, ref_last, atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        load_representation(f"openclip:{towers['openclip']}?layer=7")


def test_openclip_directory_without_weights_is_an_error(tmp_path, towers):
    import shutil

    shutil.copy(os.path.join(towers["openclip"], "open_clip_config.json"), tmp_path / "open_clip_config.json")
    with pytest.raises(FileNotFoundError, match="could not load OpenCLIP"):
        load_representation(f"openclip:{tmp_path}")  # never a silently random tower
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        load_representation(f"openclip:{towers['clip']}")  # a transformers directory is not an OpenCLIP one


# -------------------------------------------------------------------------------------------- SigLIP2
def test_siglip2_fixed_resolution_loads_as_siglip(towers):
    from transformers import SiglipVisionModel

    rep = load_representation(f"siglip2:{towers['siglip2']}")
    assert isinstance(rep.model, SiglipVisionModel) and rep.num_prefix_tokens == 0
    assert rep.grid == (4, 4) and rep.hidden_size == 48
    pixels = rep.preprocess(sample_images(2))
    with torch.no_grad():
        ref = rep.model(pixels, output_hidden_states=True).hidden_states[-2]
    assert torch.equal(rep.encode(pixels), ref)
    with pytest.raises(ValueError, match="fixed-resolution"):
        load_representation(f"siglip2:{towers['siglip2']}?size=64")


def test_siglip2_naflex_matches_its_processor(towers):
    from PIL import Image

    rep = load_representation(f"siglip2:{towers['siglip2-naflex']}")
    assert rep.image_size == 32 and rep.grid == (4, 4)  # 8 px patches, max_num_patches 16 -> 32 px square
    square = sample_images(1)[0].convert("RGB").resize((32, 32), Image.BICUBIC)
    inputs = rep.processor(images=[square], return_tensors="pt")
    with torch.no_grad():
        ref = rep.model(**inputs, output_hidden_states=True).hidden_states[-2]
    assert torch.allclose(rep.encode(rep.preprocess([square])), ref, atol=1e-5)
    assert load_representation(f"siglip2:{towers['siglip2-naflex']}?size=24").grid == (3, 3)


# --------------------------------------------------------------------------------------------- DINOv2
@pytest.mark.parametrize("name,prefix", [("dinov2", 1), ("dinov2-reg", 5)])
def test_dinov2_patch_tokens_only(towers, name, prefix):
    rep = load_representation(f"dinov2:{towers[name]}")
    # the processor's crop size (28), not the config's image_size (63), as facebook/dinov2-* (224 vs 518)
    assert rep.image_size == 28 and rep.grid == (4, 4) and rep.num_prefix_tokens == prefix
    images = sample_images(3)
    pixels = rep.preprocess(images)
    assert torch.allclose(
        pixels,
        rep.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"],
        atol=1e-6,
    )
    assert torch.allclose(rep.normalize(rep.pixels(images)), pixels, atol=1e-5)
    with torch.no_grad():
        hidden = rep.model(pixels, output_hidden_states=True).hidden_states[-2]
    assert hidden.shape[1] == 16 + prefix  # CLS (+ registers) + patches
    assert torch.equal(rep.encode(pixels), hidden[:, prefix:])


def test_dinov2_size_option_interpolates(towers):
    rep = load_representation(f"dinov2:{towers['dinov2']}?size=42")
    assert rep.image_size == 42 and rep.grid == (6, 6) and rep.resize_to == 48  # keeps the 32 -> 28 resize/crop ratio
    pixels = rep.preprocess(sample_images(2))
    assert pixels.shape == (2, 3, 42, 42)
    assert rep.encode(pixels).shape == (2, 36, 32)


# ---------------------------------------------------------------------------------------- combinations
def test_concat_same_grid_shares_pixels(towers):
    rep = load_representation(f"concat:clip:{towers['clip']}+dinov2:{towers['dinov2']}")
    clip, dino = rep.parts
    assert rep.grid == (4, 4) == clip.grid == dino.grid
    assert rep.hidden_size == clip.hidden_size + dino.hidden_size and rep.part_slices == [(0, 32), (32, 64)]
    assert rep.image_size == 32 and rep.image_spec.mean == (
        0.0,
        0.0,
        0.0,
    )  # the largest part's geometry, identity normalisation
    images = sample_images(2)
    pixels = rep.pixels(images)
    assert torch.equal(pixels, clip.pixels(images)) and torch.equal(rep.normalize(pixels), pixels)
    tokens = rep.encode(rep.preprocess(images))
    a, b = rep.split(tokens)
    assert torch.equal(a, clip.encode(clip.normalize(pixels)))
    small = F.interpolate(pixels, size=(28, 28), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    assert torch.allclose(b, dino.encode(dino.normalize(small)), atol=1e-6)
    # C-score recipe: L2-normalise each part, concatenate, re-normalise
    combined = F.normalize(torch.cat([F.normalize(p, dim=-1) for p in rep.split(tokens)], dim=-1), dim=-1)
    assert combined.shape == tokens.shape


def test_concat_grid_mismatch_names_both_grids(towers):
    with pytest.raises(ValueError) as info:
        load_representation(f"concat:clip:{towers['clip']}+dinov2:{towers['dinov2']}?size=42")
    message = str(info.value)
    assert "4x4" in message and "6x6" in message and "size=28" in message


def test_concat_layers_per_part(towers):
    rep = load_representation(f"concat:clip:{towers['clip']}?layer=-1+dinov2:{towers['dinov2']}", select_layer=-3)
    assert [p.select_layer for p in rep.parts] == [-1, -3]
    with pytest.raises(ValueError, match="at least two parts"):
        load_representation(f"concat:clip:{towers['clip']}")


def test_split_parts_and_multi_tower_names():
    from lmms_ac.vision.concat import multi_tower_spec, split_multi_tower, split_parts

    assert split_parts("clip:openai/clip-vit-large-patch14+dinov2:facebook/dinov2-large") == [
        "clip:openai/clip-vit-large-patch14",
        "dinov2:facebook/dinov2-large",
    ]
    assert split_parts("diffusion:runwayml/stable-diffusion-v1-5?prompt=a+cat+dinov2:facebook/dinov2-large") == [
        "diffusion:runwayml/stable-diffusion-v1-5?prompt=a+cat",
        "dinov2:facebook/dinov2-large",
    ]
    assert split_multi_tower("openai/clip-vit-large-patch14.facebook/dinov2-large") == [
        "openai/clip-vit-large-patch14",
        "facebook/dinov2-large",
    ]
    assert split_multi_tower("openai/clip-vit-large-patch14-336.facebook/dinov2-large") == [
        "openai/clip-vit-large-patch14-336",
        "facebook/dinov2-large",
    ]
    assert split_multi_tower("stabilityai/stable-diffusion-xl-base-1.0.openai/clip-vit-large-patch14") == [
        "stabilityai/stable-diffusion-xl-base-1.0",
        "openai/clip-vit-large-patch14",
    ]
    for single in (
        "openai/clip-vit-large-patch14",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "timm/vit_large_patch14_clip_224.openai",
    ):
        assert split_multi_tower(single) is None
    spec = parse_spec(multi_tower_spec("openai/clip-vit-large-patch14.facebook/dinov2-large"), set(FAMILIES.names()))
    assert spec.family == "concat"
    assert [parse_spec(p, set(FAMILIES.names())).family for p in split_parts(spec.target)] == ["clip", "dinov2"]
