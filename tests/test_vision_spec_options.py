"""Spec options are checked per family ("did you mean"), and the image processor backend is the one
the checkpoint's own code used: PIL for original-LLaVA towers, equal to a plain PIL reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lmms_ac.testing.datasets import sample_images
from lmms_ac.testing.towers import make_clip_tower
from lmms_ac.vision import family_options, load_representation
from lmms_ac.vision.hf import processor_backend
from lmms_ac.vision.spec import SpecOptionError


@pytest.fixture(scope="module")
def clip_tower(tmp_path_factory):
    return make_clip_tower(str(tmp_path_factory.mktemp("towers") / "clip-vit-tiny"))


@pytest.mark.parametrize(
    "spec,message",
    [
        # nothing is loaded before the check: these hub ids are never fetched
        (
            "clip:openai/clip-vit-large-patch14-336?sise=336",
            "unknown option 'sise'; did you mean 'size'\\? That is an option of "
            "diffusion, dinov2, siglip2 only; the clip family takes backend, layer",
        ),
        ("clip:openai/clip-vit-large-patch14-336?lyer=-1", "unknown option 'lyer'; did you mean 'layer'"),
        (
            "clip:openai/clip-vit-large-patch14-336?size=336",
            "option 'size' belongs to the diffusion, dinov2, siglip2 families",
        ),
        ("dinov2:facebook/dinov2-large?sizee=336", "unknown option 'sizee'; did you mean 'size'"),
        ("siglip2:google/siglip2-large-patch16-256?backnd=pil", "did you mean 'backend'"),
        (
            "openclip:laion/CLIP-ViT-L-14-laion2B-s32B-b82K?backend=pil",
            "option 'backend' belongs to the clip, dinov2, siglip, siglip2 families; the openclip family takes layer",
        ),
        ("diffusion:stabilityai/stable-diffusion-2-1?seeds=1", "did you mean 'seed'"),
        ("clip:openai/clip-vit-large-patch14?layer=-1&layer=-2", "option 'layer' is given twice"),
        (
            "concat:clip:openai/clip-vit-large-patch14+dinov2:facebook/dinov2-large?sise=224",
            "'sise'; did you mean 'size'",
        ),
        (
            "clip:openai/clip-vit-large-patch14?colour=red",
            "unknown option 'colour'; the clip family takes backend, layer",
        ),
    ],
)
def test_unknown_options_fail_before_loading(spec, message):
    with pytest.raises(SpecOptionError, match=message):
        load_representation(spec)


def test_every_family_declares_its_options():
    opts = family_options()
    assert set(opts) == {"clip", "siglip", "siglip2", "dinov2", "openclip", "concat", "diffusion"}
    assert opts["clip"] == {"layer", "backend"} and opts["concat"] == set()


def test_option_values_are_checked(clip_tower):
    with pytest.raises(ValueError, match="layer='top' is not an integer"):
        load_representation(f"clip:{clip_tower}?layer=top")
    with pytest.raises(ValueError, match="unknown image processor backend 'cuda'"):
        load_representation(f"clip:{clip_tower}?backend=cuda")
    rep = load_representation(f"clip:{clip_tower}?layer=-1&backend=pil")
    assert rep.select_layer == -1 and rep.image_backend == "pil"
    assert (
        load_representation(f"clip:{clip_tower}?layer=-1", select_layer=-3).select_layer == -1
    )  # the spec's own choice wins


# ------------------------------------------------------------------------------------------ backend
def pil_reference(image: Image.Image, size: int, mean, std) -> torch.Tensor:
    """CLIP preprocessing by hand with PIL: shortest side to ``size`` (bicubic), centre crop, /255, normalise."""
    image = image.convert("RGB")
    w, h = image.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    image = image.resize(new, Image.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    arr = np.asarray(image, dtype=np.float64)[top : top + size, left : left + size] / 255.0
    arr = (arr - np.asarray(mean)) / np.asarray(std)
    return torch.from_numpy(arr.astype(np.float32)).permute(2, 0, 1)


def _images():
    rng = np.random.default_rng(0)  # textured images: interpolation differences show
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((97, 61), (40, 130), (77, 77))
    ] + sample_images(3)


def test_pil_backend_equals_a_plain_pil_reference(clip_tower):
    rep = load_representation(f"clip:{clip_tower}", image_backend="pil")
    assert type(rep.processor).__name__ == "CLIPImageProcessorPil" and processor_backend(rep.processor) == "pil"
    spec = rep.image_spec
    images = _images()
    got = rep.preprocess(images)
    expected = torch.stack([pil_reference(im, spec.size, spec.mean, spec.std) for im in images])
    assert torch.allclose(got, expected, atol=1e-5), float((got - expected).abs().max())
    # the torchvision backend (transformers 5's default) does not: this test tells the two apart
    tv = load_representation(f"clip:{clip_tower}")
    assert processor_backend(tv.processor) == "torchvision"
    assert float((tv.preprocess(images) - expected).abs().max()) > 1e-3
    assert (
        load_representation(f"clip:{clip_tower}?backend=torchvision", image_backend="pil").image_backend
        == "torchvision"
    )


def test_original_checkpoints_use_pil_and_llava_hf_keeps_its_default(original_dirs, llava_hf_dir):
    from lmms_ac.vlm.loaders import load_vlm

    orig = load_vlm(original_dirs["full"]["checkpoint"])
    assert type(orig.vision.processor).__name__ == "CLIPImageProcessorPil" and orig.vision.image_backend == "pil"
    stage1 = original_dirs["stage1"]
    assert load_vlm(stage1["checkpoint"], model_base=stage1["base_llm"]).vision.image_backend == "pil"
    assert (
        load_vlm(original_dirs["full"]["checkpoint"], image_backend="torchvision").vision.image_backend == "torchvision"
    )
    hf = load_vlm(llava_hf_dir)
    assert hf.vision.image_backend == "torchvision"
    hf_pil = load_vlm(llava_hf_dir, image_backend="pil")
    assert hf_pil.vision.image_backend == "pil"
    images = _images()
    assert torch.equal(hf_pil.vision.preprocess(images), orig.vision.preprocess(images))
    with pytest.raises(ValueError, match="unknown image_backend 'fast'"):
        load_vlm(llava_hf_dir, image_backend="fast")
