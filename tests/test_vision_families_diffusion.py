"""Diffusion features (``diffusion:`` family) from tiny diffusers pipelines saved in their hub layouts.

Each test recomputes the features by hand with diffusers' own pieces (VAE posterior mean, the
scheduler's ``add_noise``, the pipeline's own prompt encoding, a full denoiser forward with an
independent hook) and compares with the representation, which stops the forward after the block."""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("diffusers")

from lmms_ac.testing.datasets import sample_images  # noqa: E402
from lmms_ac.testing.towers import (
    make_dit_pipeline,
    make_sd3_pipeline,
    make_sd_image_variation_pipeline,  # noqa: E402
    make_sd_pipeline,
    make_sdxl_pipeline,
)
from lmms_ac.vision import load_representation  # noqa: E402
from lmms_ac.vision.diffusion import merge_2x2  # noqa: E402


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion")
    return {
        "sd": make_sd_pipeline(str(root / "tiny-sd")),
        "sdiv": make_sd_image_variation_pipeline(str(root / "tiny-sd-image-variations")),
        "sdxl": make_sdxl_pipeline(str(root / "tiny-sdxl")),
        "sd3": make_sd3_pipeline(str(root / "tiny-sd3")),
        "dit": make_dit_pipeline(str(root / "tiny-dit")),
    }


def _noise(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _capture(module, run):
    """Output of ``module`` during a full, uninterrupted ``run()``."""
    box = {}
    handle = module.register_forward_hook(lambda _m, _a, out: box.__setitem__("out", out))
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    out = box["out"]
    return out[-1] if isinstance(out, tuple) else out


def _pixels(rep, n=2):
    return rep.preprocess(sample_images(n))


def test_sd_first_up_block_matches_manual_forward(pipes):
    from diffusers import StableDiffusionPipeline

    rep = load_representation(f"diffusion:{pipes['sd']}?size=32")
    # 32 px -> 16x16 latent -> 8x8 after the U-Net's one downsampling -> up block 0 upsamples back to 16x16
    assert rep.kind == "sd" and rep.grid == (16, 16) and rep.hidden_size == 64 and rep.t == 1 and rep.block == 0
    x = _pixels(rep)
    assert x.min() >= -1 and x.max() <= 1  # VAE input range
    tokens = rep.encode(x)

    pipe = StableDiffusionPipeline.from_pretrained(pipes["sd"], safety_checker=None, requires_safety_checker=False)
    with torch.no_grad():
        z = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        eps = _noise((1, 4, 16, 16)).expand_as(z)
        x_t = pipe.scheduler.add_noise(z, eps, torch.tensor([1]))
        cond, _ = pipe.encode_prompt("", "cpu", 1, False)
    up0 = _capture(
        pipe.unet.up_blocks[0],
        lambda: pipe.unet(x_t, torch.tensor([1, 1]), encoder_hidden_states=cond.expand(2, -1, -1)),
    )
    assert up0.shape == (2, 64, 16, 16)
    assert torch.allclose(tokens, up0.flatten(2).transpose(1, 2), atol=1e-5)


def test_sd_seeded_and_per_image(pipes):
    rep = load_representation(f"diffusion:{pipes['sd']}?size=32")
    x = _pixels(rep, 3)
    first, again = rep.encode(x), rep.encode(x)
    assert torch.equal(first, again)
    # the same noise for every image: an image alone gives its row of the batch
    assert torch.allclose(rep.encode(x[1:2]), first[1:2], atol=1e-5)
    other_seed = load_representation(f"diffusion:{pipes['sd']}?size=32&seed=1").encode(x)
    assert not torch.allclose(other_seed, first)
    later_t = load_representation(f"diffusion:{pipes['sd']}?size=32&t=500").encode(x)
    assert not torch.allclose(later_t, first)


def test_sd_options_and_errors(pipes):
    second = load_representation(f"diffusion:{pipes['sd']}?size=32&block=1")  # last up block: no upsampler, 32 channels
    assert second.grid == (16, 16) and second.hidden_size == 32
    assert second.encode(_pixels(second)).shape == (2, 256, 32)
    prompted = load_representation(f"diffusion:{pipes['sd']}?size=32&prompt=a+cat")
    assert not torch.equal(prompted.prompt_embeds, second.prompt_embeds)
    assert load_representation(f"diffusion:{pipes['sd']}").image_size == 768  # SD default
    for bad, match in [
        ("size=33", "multiple"),
        ("size=34", "downsamplings"),
        ("t=1000", "outside"),
        ("block=5", "out of range"),
        ("layer=-2", "block="),
        ("steps=3", "unknown option"),
        ("label=null", "DiT only"),
    ]:
        with pytest.raises(ValueError, match=match):
            load_representation(f"diffusion:{pipes['sd']}?{bad}")


def test_sd_image_variations_condition_on_the_image(pipes):
    from diffusers import StableDiffusionImageVariationPipeline

    rep = load_representation(f"diffusion:{pipes['sdiv']}?size=32")
    assert rep.kind == "sd-image-variation" and rep.image_encoder_spec.size == 24
    x = _pixels(rep)
    tokens = rep.encode(x)
    pipe = StableDiffusionImageVariationPipeline.from_pretrained(
        pipes["sdiv"], safety_checker=None, requires_safety_checker=False
    )
    with torch.no_grad():
        z = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        x_t = pipe.scheduler.add_noise(z, _noise((1, 4, 16, 16)).expand_as(z), torch.tensor([1]))
        cond = rep._image_conditioning(x)
    assert cond.shape == (2, 1, 32) and not torch.allclose(cond[0], cond[1])  # one CLIP image embedding per image
    up0 = _capture(pipe.unet.up_blocks[0], lambda: pipe.unet(x_t, 1, encoder_hidden_states=cond))
    assert torch.allclose(tokens, up0.flatten(2).transpose(1, 2), atol=1e-5)
    with pytest.raises(ValueError, match="no text prompt"):
        load_representation(f"diffusion:{pipes['sdiv']}?size=32&prompt=a+cat")


def test_sdxl_uses_pooled_text_and_time_ids(pipes):
    from diffusers import DDPMScheduler, StableDiffusionXLPipeline

    rep = load_representation(f"diffusion:{pipes['sdxl']}?size=32")
    assert rep.kind == "sdxl" and rep.grid == (16, 16) and rep.hidden_size == 64
    assert load_representation(f"diffusion:{pipes['sdxl']}").image_size == 512
    x = _pixels(rep)
    tokens = rep.encode(x)
    pipe = StableDiffusionXLPipeline.from_pretrained(pipes["sdxl"])
    with torch.no_grad():
        z = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        # Euler's add_noise is the same process in sigma form; DDPM's form is the documented one
        ddpm = DDPMScheduler.from_config(pipe.scheduler.config)
        x_t = ddpm.add_noise(z, _noise((1, 4, 16, 16)).expand_as(z), torch.tensor([1]))
        cond, _, pooled, _ = pipe.encode_prompt(
            "", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        time_ids = pipe._get_add_time_ids((32, 32), (0, 0), (32, 32), cond.dtype, text_encoder_projection_dim=32)
    added = {"text_embeds": pooled.expand(2, -1), "time_ids": time_ids.expand(2, -1)}
    up0 = _capture(
        pipe.unet.up_blocks[0],
        lambda: pipe.unet(x_t, 1, encoder_hidden_states=cond.expand(2, -1, -1), added_cond_kwargs=added),
    )
    assert torch.allclose(tokens, up0.flatten(2).transpose(1, 2), atol=1e-5)


def test_sd3_last_block_merged_2x2(pipes):
    from diffusers import StableDiffusion3Pipeline

    rep = load_representation(f"diffusion:{pipes['sd3']}?size=32")
    # 16x16 latent / patch 2 = 8x8 tokens of 16 channels -> 4x4 merged tokens of 4 x 16
    assert rep.kind == "sd3" and rep.token_grid == (8, 8) and rep.grid == (4, 4) and rep.hidden_size == 64
    x = _pixels(rep)
    tokens = rep.encode(x)
    pipe = StableDiffusion3Pipeline.from_pretrained(pipes["sd3"], text_encoder_3=None, tokenizer_3=None)
    vcfg = pipe.vae.config
    with torch.no_grad():
        z = (pipe.vae.encode(x).latent_dist.mean - vcfg.shift_factor) * vcfg.scaling_factor
        s = 1 / 1000
        x_t = (1 - s) * z + s * _noise((1, 4, 16, 16)).expand_as(z)
        cond, _, pooled, _ = pipe.encode_prompt(
            "", None, None, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
        )
    last = _capture(
        pipe.transformer.transformer_blocks[-1],
        lambda: pipe.transformer(
            hidden_states=x_t,
            timestep=torch.tensor([1.0, 1.0]),
            encoder_hidden_states=cond.expand(2, -1, -1),
            pooled_projections=pooled.expand(2, -1),
        ),
    )
    assert last.shape == (2, 64, 16)
    assert torch.allclose(tokens, merge_2x2(last, (8, 8)), atol=1e-5)
    assert load_representation(f"diffusion:{pipes['sd3']}?size=32&merge=mean").hidden_size == 16
    unmerged = load_representation(f"diffusion:{pipes['sd3']}?size=32&merge=none")
    assert unmerged.grid == (8, 8) and torch.allclose(unmerged.encode(x), last, atol=1e-5)


def test_dit_null_class_and_published_variant(pipes):
    from diffusers import DiTPipeline

    rep = load_representation(f"diffusion:{pipes['dit']}?size=32")
    assert rep.kind == "dit" and rep.grid == (4, 4) and rep.hidden_size == 64 and rep.block == -1
    x = _pixels(rep)
    tokens = rep.encode(x)
    pipe = DiTPipeline.from_pretrained(pipes["dit"])
    with torch.no_grad():
        z = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        x_t = pipe.scheduler.add_noise(z, _noise((1, 4, 16, 16)).expand_as(z), torch.tensor([1]))
    null = torch.tensor([1000, 1000])  # DiT's classifier-free-guidance label: the "empty prompt"
    last = _capture(
        pipe.transformer.transformer_blocks[-1],
        lambda: pipe.transformer(x_t, timestep=torch.tensor([1, 1]), class_labels=null),
    )
    assert torch.allclose(tokens, merge_2x2(last, (8, 8)), atol=1e-5)
    published = load_representation(f"diffusion:{pipes['dit']}?size=32&label=none").encode(x)  # timestep embedding only
    assert not torch.allclose(published, tokens)
    with pytest.raises(ValueError, match="no text prompt"):
        load_representation(f"diffusion:{pipes['dit']}?size=32&prompt=cat")


def test_merge_2x2_order():
    grid = torch.arange(16.0).view(1, 16, 1)  # a 4x4 grid whose token value is its row-major index
    merged = merge_2x2(grid, (4, 4))
    assert merged.shape == (1, 4, 4)
    assert merged[0, 0].tolist() == [0, 4, 1, 5]  # top-left, bottom-left, top-right, bottom-right
    assert merged[0, 3].tolist() == [10, 14, 11, 15]
    assert merge_2x2(grid, (4, 4), "mean")[0, :, 0].tolist() == [2.5, 4.5, 10.5, 12.5]


def test_missing_diffusers_is_a_clear_error(monkeypatch, pipes):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match=r"pip install 'lmms-ac\[diffusion\]'"):
        load_representation(f"diffusion:{pipes['sd']}?size=32")


def test_missing_pipeline_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_representation(f"diffusion:{tmp_path}")


def test_concat_with_diffusion_part(pipes, tmp_path):
    from lmms_ac.testing.towers import make_clip_tower

    clip_dir = make_clip_tower(str(tmp_path / "clip-vit-tiny"))  # 32 px, 8 px patches: 4x4, as the tiny DiT at 32 px
    rep = load_representation(f"concat:clip:{clip_dir}+diffusion:{pipes['dit']}?size=32")
    clip, dit = rep.parts
    assert rep.grid == (4, 4) and rep.hidden_size == 32 + 64
    pixels = rep.pixels(sample_images(2))
    a, b = rep.split(rep.encode(rep.normalize(pixels)))
    assert torch.equal(a, clip.encode(clip.normalize(pixels)))
    assert torch.allclose(
        b, dit.encode(dit.normalize(pixels)), atol=1e-6
    )  # each part normalises the shared pixels its own way
