"""Bad input gets a clear error naming the problem and the fix, or correct handling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lmms_ac.registry import UnknownEntryError
from lmms_ac.vlm.loaders import CheckpointError, load_vlm
from lmms_ac.vlm.prompts import build_prompt


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vlm(str(tmp_path / "nope"))


def test_directory_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_vlm(str(tmp_path))


def test_unknown_vision_tower(original_dirs):
    ckpt = original_dirs["full"]["checkpoint"]
    with pytest.raises(UnknownEntryError, match="unknown vision representation family 'clipp'; did you mean 'clip'"):
        load_vlm(ckpt, vision_tower="clipp:openai/clip-vit-large-patch14")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_vlm(ckpt, vision_tower="clip:/no/such/tower")


def test_vision_tower_that_does_not_fit_the_projector(original_dirs, tmp_path):
    from lmms_ac.testing.towers import make_siglip_tower

    tower = make_siglip_tower(str(tmp_path / "siglip-tiny"), hidden_size=48)
    with pytest.raises(CheckpointError, match="gives 48-dim tokens but the projector expects 32"):
        load_vlm(original_dirs["full"]["checkpoint"], vision_tower=f"siglip:{tower}")


def test_checkpoint_without_projector_weights(original_dirs):
    with pytest.raises(CheckpointError, match="no projector weights"):
        load_vlm(original_dirs["noproj"]["checkpoint"])


def test_stage1_checkpoint_needs_model_base(original_dirs):
    with pytest.raises(CheckpointError, match="pass model_base="):
        load_vlm(original_dirs["stage1"]["checkpoint"])


def test_bad_dtype_and_prompt_format(llava_hf_dir, llava_hf_vlm):
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        load_vlm(llava_hf_dir, dtype="float8")
    from lmms_ac.vlm.prompts import resolve_format

    with pytest.raises(ValueError, match="unknown prompt format"):
        resolve_format("llama3", llava_hf_vlm.tokenizer)


def _odd_images():
    rng = np.random.RandomState(0)
    rgb = Image.fromarray((rng.rand(30, 50, 3) * 255).astype("uint8"))
    rgba = Image.fromarray((rng.rand(30, 20, 4) * 255).astype("uint8"), "RGBA")
    return {
        "RGBA": rgba,
        "L": rgb.convert("L"),
        "P": rgb.convert("P"),
        "P+transparency": rgba.convert("P"),
        "1x1": Image.new("RGB", (1, 1), (10, 200, 30)),
        "8000x100": rgb.resize((8000, 100)),
        "CMYK": rgb.convert("CMYK"),
        "I;16": Image.fromarray((rng.rand(20, 20) * 60000).astype("uint16")),
        "1-bit": rgb.convert("1"),
        "LA": rgba.convert("LA"),
    }


@pytest.mark.parametrize("aspect", ["pad", "original"])
def test_images_of_any_mode_and_size(llava_hf_dir, aspect):
    vlm = load_vlm(llava_hf_dir, image_aspect_ratio=aspect)
    images = _odd_images()
    prompts = [build_prompt("Describe it.", 1, "vicuna_v1")] * len(images)
    batch = [[im] for im in images.values()]
    texts = vlm.generate(prompts, batch, max_new_tokens=3)
    assert len(texts) == len(images) and all(isinstance(t, str) for t in texts)
    lls = vlm.loglikelihood(prompts, [" Yes"] * len(images), batch)
    assert all(np.isfinite(ll) for ll, _ in lls)


def test_transparent_pixels_become_black():
    from lmms_ac.vision.base import to_rgb

    im = Image.new("RGBA", (2, 1), (255, 0, 0, 0))
    im.putpixel((1, 0), (0, 255, 0, 255))
    out = to_rgb(im)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == (0, 255, 0)


def test_non_image_visual_is_refused(llava_hf_vlm):
    with pytest.raises(TypeError, match="expected a PIL image, got str"):
        llava_hf_vlm.generate([build_prompt("x", 1, "vicuna_v1")], [["/path/to/video.mp4"]], max_new_tokens=2)


def test_placeholder_count_must_match_images(llava_hf_vlm):
    with pytest.raises(ValueError, match="placeholders but 1 images"):
        build_prompt("<image> and <image>", 1, "vicuna_v1")
