"""Tiny random vision towers saved as local directories, in the layouts of their hub repositories."""

from __future__ import annotations

import torch


def make_clip_tower(
    directory: str, image_size: int = 32, patch_size: int = 8, hidden_size: int = 32, seed: int = 0
) -> str:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )
    CLIPVisionModel(cfg).save_pretrained(directory)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(directory)
    return directory


def make_siglip_tower(
    directory: str, image_size: int = 32, patch_size: int = 8, hidden_size: int = 48, seed: int = 0
) -> str:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    cfg = SiglipVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )
    SiglipVisionModel(cfg).save_pretrained(directory)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return directory


# --------------------------------------------------------------------------------------------------
# More families: OpenCLIP, SigLIP2, DINOv2, diffusers pipelines (each saved in its hub layout)
# --------------------------------------------------------------------------------------------------
def make_openclip_tower(
    directory: str,
    image_size: int = 32,
    patch_size: int = 8,
    width: int = 32,
    layers: int = 3,
    mean=(0.5, 0.4, 0.3),
    std=(0.2, 0.25, 0.3),
    seed: int = 0,
) -> str:
    """A tiny open_clip ViT in the layout of the hub's OpenCLIP repos: ``open_clip_config.json``
    (``model_cfg`` + ``preprocess_cfg``) and ``open_clip_model.safetensors``."""
    import json
    import os

    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": image_size,
            "layers": layers,
            "width": width,
            "patch_size": patch_size,
            "head_width": 8,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    model = open_clip.CLIP(**model_cfg)
    os.makedirs(directory, exist_ok=True)
    preprocess_cfg = {"mean": list(mean), "std": list(std), "interpolation": "bicubic", "resize_mode": "shortest"}
    with open(os.path.join(directory, "open_clip_config.json"), "w", encoding="utf-8") as f:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, f, indent=2)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        os.path.join(directory, "open_clip_model.safetensors"),
    )
    return directory


def make_siglip2_tower(
    directory: str, image_size: int = 32, patch_size: int = 8, hidden_size: int = 48, seed: int = 0
) -> str:
    """A fixed-resolution SigLIP2 checkpoint as the hub stores them (``google/siglip2-*-patch16-256``):
    a full ``SiglipModel`` (``model_type: siglip``, text + vision) with a ``SiglipImageProcessor``."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(seed)
    cfg = SiglipConfig(
        text_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=64,
            max_position_embeddings=8,
            pad_token_id=1,
            bos_token_id=None,
            eos_token_id=1,
        ),
        vision_config=dict(
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
        ),
    )
    SiglipModel(cfg).save_pretrained(directory)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return directory


def make_siglip2_naflex_tower(
    directory: str, patch_size: int = 8, max_num_patches: int = 16, hidden_size: int = 32, seed: int = 0
) -> str:
    """A NaFlex SigLIP2 vision tower (``model_type: siglip2_vision_model``) with a ``Siglip2ImageProcessor``."""
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(seed)
    cfg = Siglip2VisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=3,
        num_attention_heads=4,
        patch_size=patch_size,
        num_patches=max_num_patches,
    )
    Siglip2VisionModel(cfg).save_pretrained(directory)
    Siglip2ImageProcessor(patch_size=patch_size, max_num_patches=max_num_patches).save_pretrained(directory)
    return directory


def make_dinov2_tower(
    directory: str,
    crop_size: int = 28,
    resize_to: int = 32,
    patch_size: int = 7,
    hidden_size: int = 32,
    registers: int = 0,
    seed: int = 0,
) -> str:
    """A tiny DINOv2 (``Dinov2Model``, or ``Dinov2WithRegistersModel`` when ``registers > 0``) with the
    ``BitImageProcessor`` of ``facebook/dinov2-*`` scaled down (resize shortest edge, centre crop, ImageNet mean/std).
    The config's ``image_size`` differs from the crop size on purpose, as on the hub (518 vs 224)."""
    from transformers import BitImageProcessor

    torch.manual_seed(seed)
    common = dict(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=2 * crop_size + patch_size,
        patch_size=patch_size,
    )
    if registers:
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **common)).save_pretrained(
            directory
        )
    else:
        from transformers import Dinov2Config, Dinov2Model

        Dinov2Model(Dinov2Config(**common)).save_pretrained(directory)
    BitImageProcessor(
        size={"shortest_edge": resize_to},
        crop_size={"height": crop_size, "width": crop_size},
        do_center_crop=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
    ).save_pretrained(directory)
    return directory


def _bytes_to_unicode():
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def make_clip_tokenizer(model_max_length: int = 77):
    """A byte-level CLIP BPE tokenizer built offline: every byte (alone and word-final) plus two merges
    (``a t</w>``, ``c at</w>``) and the start/end specials, the layout of openai/clip-vit-* tokenizers."""
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for tok in ("at</w>", "cat</w>", "<|startoftext|>", "<|endoftext|>"):
        vocab[tok] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[("a", "t</w>"), ("c", "at</w>")], model_max_length=model_max_length)


def _tiny_clip_text(hidden_size: int = 32, projection_dim=None, vocab_size: int = 516, max_positions: int = 77):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=vocab_size,
        max_position_embeddings=max_positions,
        bos_token_id=514,
        eos_token_id=515,
        pad_token_id=515,
        projection_dim=projection_dim or hidden_size,
    )
    return CLIPTextModelWithProjection(cfg) if projection_dim else CLIPTextModel(cfg)


def _tiny_vae(latent_channels: int = 4, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
        sample_size=32,
        **extra,
    )


def _tiny_unet(cross_attention_dim: int = 32, **extra):
    """SD's layout in miniature: cross-attention down blocks then a plain one; up block 0 is a plain
    ``UpBlock2D`` with an upsampler (as SD1.5's first up block, 1280 channels there, 64 here)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
        **extra,
    )


def _sd_scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )


def make_sd_pipeline(directory: str, seed: int = 0) -> str:
    """A tiny ``StableDiffusionPipeline`` directory (model_index.json, vae/, unet/, text_encoder/, tokenizer/,
    scheduler/)."""
    from diffusers import StableDiffusionPipeline

    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline(
        vae=_tiny_vae(),
        text_encoder=_tiny_clip_text(),
        tokenizer=make_clip_tokenizer(),
        unet=_tiny_unet(),
        scheduler=_sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory)
    return directory


def make_sd_image_variation_pipeline(directory: str, seed: int = 0) -> str:
    """A tiny ``StableDiffusionImageVariationPipeline`` (lambdalabs/sd-image-variations-diffusers layout):
    a CLIP vision encoder with projection conditions the U-Net through its image embedding."""
    from diffusers import StableDiffusionImageVariationPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    enc = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=24,
            patch_size=8,
            projection_dim=32,
        )
    )
    fe = CLIPImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})
    pipe = StableDiffusionImageVariationPipeline(
        vae=_tiny_vae(),
        image_encoder=enc,
        unet=_tiny_unet(32),
        scheduler=_sd_scheduler(),
        safety_checker=None,
        feature_extractor=fe,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory)
    return directory


def make_sdxl_pipeline(directory: str, seed: int = 0) -> str:
    """A tiny ``StableDiffusionXLPipeline``: two CLIP text encoders (the second with projection, whose pooled
    output and the six size/crop ids feed the U-Net's ``text_time`` added embedding)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    unet = _tiny_unet(
        64, addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8
    )
    sched = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
    )
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae(),
        text_encoder=_tiny_clip_text(32),
        text_encoder_2=_tiny_clip_text(32, projection_dim=32),
        tokenizer=make_clip_tokenizer(),
        tokenizer_2=make_clip_tokenizer(),
        unet=unet,
        scheduler=sched,
        add_watermarker=False,
    )
    pipe.save_pretrained(directory)
    return directory


def make_sd3_pipeline(directory: str, seed: int = 0) -> str:
    """A tiny ``StableDiffusion3Pipeline`` without T5 (``text_encoder_3``/``tokenizer_3`` saved as null), an
    MM-DiT of 2 joint blocks, a flow-matching scheduler and a VAE with a shift factor."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=32,
        out_channels=4,
        pos_embed_max_size=32,
    )
    vae = _tiny_vae(shift_factor=0.1, scaling_factor=1.5, use_quant_conv=False, use_post_quant_conv=False)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=_tiny_clip_text(16, projection_dim=16),
        tokenizer=make_clip_tokenizer(),
        text_encoder_2=_tiny_clip_text(16, projection_dim=16),
        tokenizer_2=make_clip_tokenizer(),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipe.save_pretrained(directory)
    return directory


def make_dit_pipeline(directory: str, seed: int = 0) -> str:
    """A tiny class-conditional ``DiTPipeline`` (facebook/DiT-XL-2-256 layout: DiT transformer, VAE, DDIM scheduler)."""
    from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        patch_size=2,
        sample_size=16,
        num_embeds_ada_norm=1000,
    )
    sched = DDIMScheduler(
        beta_start=0.0001, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000, clip_sample=False
    )
    pipe = DiTPipeline(transformer=transformer, vae=_tiny_vae(), scheduler=sched, id2label={0: "tench", 1: "goldfish"})
    pipe.save_pretrained(directory)
    return directory
