"""Diffusion-model features through ``diffusers`` (optional extra: ``pip install 'lmms-ac[diffusion]'``).

Spec: ``diffusion:<hub id or pipeline
    directory>[?t=1&block=0&prompt=&seed=0&size=768&latent=mean&merge=concat&label=null&resize=crop&t5=0]``

The target is a diffusers pipeline (a hub id or a directory with ``model_index.json``); its
``_class_name`` picks the recipe:

============================================ ================ ====================== ============ =========
pipeline class                               denoiser         conditioning           default size tokens
============================================ ================ ====================== ============ =========
StableDiffusionPipeline (SD1.5, SD2.1)       U-Net            CLIP text of ``prompt`` 768         up block ``block`` (0)
StableDiffusionImageVariationPipeline        U-Net            CLIP image embedding   768          up block ``block`` (0)
StableDiffusionXLPipeline                    U-Net            2 CLIP texts + pooled  512          up block ``block`` (0)
                                                              + size/crop time ids
StableDiffusion3Pipeline                     MM-DiT           2 CLIP texts (+ T5     512          block ``block`` (-1),
                                                              only with ``t5=1``)                 2x2 merged
DiTPipeline                                  DiT              class label ``label``  512          block ``block`` (-1),
                                                                                                  2x2 merged
============================================ ================ ====================== ============ =========

Method (docs/METHODS.md#diffusion-features, DIFT-style): the image, resized and centre-cropped to ``size`` and
scaled to [-1, 1] (``normalize`` with mean = std = 0.5), is VAE-encoded
(``z = (mean(VAE(I)) - shift) * scaling``; ``latent=sample`` draws from the posterior with the seeded
generator instead), noised once at timestep ``t`` (default 1):

* DDPM-family schedulers (SD, SDXL, DiT): ``x_t = sqrt(a_t) z + sqrt(1 - a_t) eps`` with ``a_t`` the
  scheduler's ``alphas_cumprod[t]``;
* flow matching (SD3): ``x_t = (1 - s) z + s eps`` with ``s = t / num_train_timesteps``, timestep ``t``;

``eps`` is drawn once from ``torch.Generator().manual_seed(seed)`` and is identical for every image.
The denoiser runs once (the U-Net's forward stops right after the captured block); a forward hook
takes the output of ``unet.up_blocks[block]`` (block 0 = the first upsampling block, 1280 channels
for SD1.5/2.1/SDXL, a ``size/32`` grid for SD at 768 -> 24x24) or of
``transformer.transformer_blocks[block]`` (last block by default) whose tokens are merged 2x2
(``merge=concat``: the 4 neighbours' channels concatenated in the order top-left, bottom-left,
top-right, bottom-right as in the law paper's code, so DiT-XL gives 4 x 1152 = 4608 and SD3-medium
4 x 1536 = 6144 channels; ``merge=mean`` averages them; ``merge=none`` keeps every token).

Conditioning is computed once at load time and the text encoders are then dropped: the empty prompt
(or ``prompt=...``) for text-conditioned models, the null class (``label=null``, DiT's classifier-free
guidance label; ``label=none`` removes the class embedding as the law paper's code does; an integer
picks an ImageNet class) for DiT, and the image's own CLIP image embedding (computed per image from
the same pixels, resized to the feature extractor's size and normalised with its mean/std) for
Stable Diffusion Image Variations. SD3 runs without its T5 encoder unless ``t5=1`` (the T5 part of
the context is then zeros, as diffusers does when ``text_encoder_3`` is None).

Differences from the law paper's published code (named here, not copied): it stretched images to a
square (``resize=stretch`` reproduces that), sampled the VAE posterior and the noise without a seed,
passed the [-1, 1] image unnormalised to the image-variation CLIP encoder, skipped SDXL's added
time/text embeddings, and for SD3 used a scheduler whose ``add_noise`` returns the clean latent at
``t = 1`` without the VAE shift factor.

``select_layer`` (the ``?layer=`` option of other families) does not apply here; ``block`` does.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from PIL import Image

from lmms_ac.vision.base import ImageSpec, VisionRepresentation, to_rgb
from lmms_ac.vision.spec import RepresentationSpec

INSTALL_HINT = "the diffusion family needs diffusers: pip install 'lmms-ac[diffusion]'"

# pipeline class -> (kind, default input size)
PIPELINES: Dict[str, Tuple[str, int]] = {
    "StableDiffusionPipeline": ("sd", 768),
    "StableDiffusionImageVariationPipeline": ("sd-image-variation", 768),
    "StableDiffusionXLPipeline": ("sdxl", 512),
    "StableDiffusion3Pipeline": ("sd3", 512),
    "DiTPipeline": ("dit", 512),
}
_OPTIONS = {"t", "block", "prompt", "seed", "size", "latent", "merge", "label", "resize", "t5", "layer"}


def _require_diffusers():
    try:
        import diffusers  # noqa: F401
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return diffusers


class _StopForward(Exception):
    """Raised by the capture hook to skip the rest of the denoiser once the block has run."""


def merge_2x2(tokens: torch.Tensor, grid: Tuple[int, int], mode: str = "concat") -> torch.Tensor:
    """``[B, H*W, D]`` row-major tokens -> ``[B, (H/2)*(W/2), 4D]`` (concat) or ``[..., D]`` (mean).

    Concat order per merged token: (dy, dx) = (0, 0), (1, 0), (0, 1), (1, 1), i.e. top-left,
    bottom-left, top-right, bottom-right (the law paper's ``unfold`` order)."""
    b, n, d = tokens.shape
    h, w = grid
    if n != h * w or h % 2 or w % 2:
        raise ValueError(f"cannot merge 2x2 tokens of a {h}x{w} grid holding {n} tokens")
    x = tokens.reshape(b, h // 2, 2, w // 2, 2, d)  # [B, i, dy, j, dx, D]
    if mode == "mean":
        return x.mean(dim=(2, 4)).reshape(b, (h // 2) * (w // 2), d)
    x = x.permute(0, 1, 3, 4, 2, 5)  # [B, i, j, dx, dy, D]
    return x.reshape(b, (h // 2) * (w // 2), 4 * d)


def _int_option(spec: RepresentationSpec, key: str, default: int) -> int:
    value = spec.opts.get(key)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{spec}: option {key}={value!r} is not an integer") from None


def _choice(spec: RepresentationSpec, key: str, default: str, allowed: Sequence[str]) -> str:
    value = spec.opts.get(key, default) or default
    if value not in allowed:
        raise ValueError(f"{spec}: option {key}={value!r}; expected one of {', '.join(allowed)}")
    return value


def read_model_index(target: str) -> Dict[str, Any]:
    """``model_index.json`` of a local pipeline directory or hub id."""
    path = os.path.expanduser(target)
    if os.path.isdir(path):
        index = os.path.join(path, "model_index.json")
        if not os.path.isfile(index):
            raise FileNotFoundError(
                f"{target!r} holds no model_index.json; a diffusion: target is a diffusers pipeline "
                f"directory (model_index.json + vae/ + unet/ or transformer/ + scheduler/ ...)"
            )
        with open(index, encoding="utf-8") as f:
            return json.load(f)
    if target.startswith(("/", ".", "~")) or target.count("/") > 1:
        raise FileNotFoundError(
            f"diffusion pipeline directory {target!r} does not exist; pass a hub id or an existing directory"
        )
    diffusers = _require_diffusers()
    try:
        return dict(diffusers.DiffusionPipeline.load_config(target))
    except Exception as err:  # OSError / EnvironmentError / hub errors
        raise FileNotFoundError(
            f"could not read the diffusers pipeline {target!r}: {err}. Use a hub id your machine can reach or a local "
            f"pipeline directory (mirror it with `huggingface-cli download {target}` on a machine with a hub)"
        ) from err


class DiffusionRepresentation(VisionRepresentation):
    """One-step diffusion features of a VAE + denoiser, conditioning fixed at load time."""

    def __init__(
        self,
        spec: RepresentationSpec,
        kind: str,
        vae: torch.nn.Module,
        denoiser: torch.nn.Module,
        scheduler: Any,
        *,
        size: int,
        conditioning: Dict[str, torch.Tensor],
        image_encoder: Optional[torch.nn.Module] = None,
        image_encoder_spec: Optional[ImageSpec] = None,
    ):
        super().__init__()
        self.spec = str(spec)
        self.kind = kind
        self.is_transformer = kind in ("sd3", "dit")
        self.t = _int_option(spec, "t", 1)
        self.seed = _int_option(spec, "seed", 0)
        self.block = _int_option(spec, "block", -1 if self.is_transformer else 0)
        self.latent_mode = _choice(spec, "latent", "mean", ("mean", "sample"))
        self.merge = _choice(spec, "merge", "concat", ("concat", "mean", "none"))
        self.resize_mode = _choice(spec, "resize", "crop", ("crop", "stretch"))
        self.label = spec.opts.get("label", "null") or "null"

        vae.decoder = None  # only the encoder is used
        if hasattr(vae, "post_quant_conv"):
            vae.post_quant_conv = None
        self.vae = vae
        self.denoiser = denoiser
        self.image_encoder = image_encoder
        self.image_encoder_spec = image_encoder_spec
        self.scheduler_config = dict(scheduler.config)
        for name, value in conditioning.items():
            self.register_buffer(name, value, persistent=False)

        vcfg = vae.config
        if getattr(vcfg, "force_upcast", False) and next(vae.parameters()).dtype == torch.float16:
            vae.to(torch.float32)  # SDXL's VAE overflows in fp16; diffusers upcasts it the same way
        self.vae_scale = 2 ** (len(vcfg.block_out_channels) - 1)
        self.scaling_factor = float(getattr(vcfg, "scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(getattr(vcfg, "shift_factor", 0.0) or 0.0)
        if size <= 0 or size % self.vae_scale:
            raise ValueError(
                f"{self.spec}: size {size} must be a positive multiple of the VAE's downsampling factor "
                f"{self.vae_scale}"
            )
        latent = size // self.vae_scale
        self.image_spec = ImageSpec(size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

        # the noise schedule
        n_train = int(self.scheduler_config.get("num_train_timesteps", 1000))
        if not 0 <= self.t < n_train:
            raise ValueError(f"{self.spec}: t={self.t} outside the scheduler's 0..{n_train - 1}")
        self.flow_matching = "FlowMatch" in type(scheduler).__name__
        if self.flow_matching:
            sigma = self.t / n_train
            self.noise_coefs = (1.0 - sigma, sigma)
        else:
            from diffusers import DDPMScheduler

            alphas = DDPMScheduler.from_config(self.scheduler_config).alphas_cumprod
            a_t = float(alphas[self.t])
            self.noise_coefs = (a_t**0.5, (1.0 - a_t) ** 0.5)

        # seeded noise, identical for every image (drawn on the CPU so every device sees the same numbers)
        channels = int(vcfg.latent_channels)
        gen = torch.Generator().manual_seed(self.seed)
        self.register_buffer("noise", torch.randn(1, channels, latent, latent, generator=gen), persistent=False)
        self.register_buffer(
            "posterior_noise", torch.randn(1, channels, latent, latent, generator=gen), persistent=False
        )

        # the captured module and the output geometry
        if self.is_transformer:
            blocks = denoiser.transformer_blocks
            self._capture_module = self._pick(blocks, "transformer_blocks")
            p = int(denoiser.config.patch_size)
            if latent % p:
                raise ValueError(
                    f"{self.spec}: latent size {latent} (image {size}) is not a multiple of the patch size {p}; "
                    f"use a size that is a multiple of {p * self.vae_scale}"
                )
            self.token_grid = (latent // p, latent // p)
            inner = int(denoiser.config.num_attention_heads) * int(denoiser.config.attention_head_dim)
            if self.merge == "none":
                self.grid, self.hidden_size = self.token_grid, inner
            else:
                if self.token_grid[0] % 2:
                    raise ValueError(
                        f"{self.spec}: a {self.token_grid[0]}x{self.token_grid[1]} token grid cannot be merged 2x2; "
                        f"use a size that is a multiple of {2 * p * self.vae_scale} or merge=none"
                    )
                self.grid = (self.token_grid[0] // 2, self.token_grid[1] // 2)
                self.hidden_size = inner * (4 if self.merge == "concat" else 1)
            self.patch_size = size // self.grid[0]
        else:
            ups = denoiser.up_blocks
            self._capture_module = self._pick(ups, "up_blocks")
            index = self.block % len(ups)
            n_down = sum(1 for blk in denoiser.down_blocks if getattr(blk, "downsamplers", None) is not None)
            if latent % (2**n_down):
                raise ValueError(
                    f"{self.spec}: size {size} gives a {latent}x{latent} latent that the U-Net's {n_down} "
                    f"downsamplings do not divide; use a multiple of {self.vae_scale * 2**n_down}"
                )
            n_up = sum(1 for blk in list(ups)[: index + 1] if getattr(blk, "upsamplers", None) is not None)
            g = latent // 2**n_down * 2**n_up
            self.grid = (g, g)
            self.hidden_size = int(ups[index].resnets[-1].out_channels)
            self.patch_size = size // g
        if self.kind == "dit" and self.label not in ("null", "none"):
            try:
                int(self.label)
            except ValueError:
                raise ValueError(f"{self.spec}: label={self.label!r}; expected null, none or a class id") from None

    def _pick(self, blocks, name: str) -> torch.nn.Module:
        if not -len(blocks) <= self.block < len(blocks):
            raise ValueError(
                f"{self.spec}: block {self.block} out of range for {len(blocks)} {name} (valid: "
                f"{-len(blocks)}..{len(blocks) - 1})"
            )
        return blocks[self.block]

    # ---------------------------------------------------------------------------- preprocessing
    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        if self.resize_mode == "crop":
            return super().pixels(images)
        import numpy as np

        size = self.image_spec.size
        out = [
            torch.from_numpy(
                np.asarray(to_rgb(im).resize((size, size), Image.BICUBIC), dtype="float32") / 255.0
            ).permute(2, 0, 1)
            for im in images
        ]
        return torch.stack(out)

    # ---------------------------------------------------------------------------- the forward pass
    def latents(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dist = self.vae.encode(pixel_values).latent_dist
        z = dist.mean if self.latent_mode == "mean" else dist.mean + dist.std * self.posterior_noise.to(dist.mean.dtype)
        return (z - self.shift_factor) * self.scaling_factor

    def noisy_latents(self, pixel_values: torch.Tensor) -> torch.Tensor:
        z = self.latents(pixel_values)
        a, b = self.noise_coefs
        return a * z + b * self.noise.to(device=z.device, dtype=z.dtype).expand_as(z)

    def _image_conditioning(self, pixel_values: torch.Tensor) -> torch.Tensor:
        ispec = self.image_encoder_spec
        x = pixel_values * 0.5 + 0.5  # back to [0, 1]
        x = F.interpolate(x.float(), size=(ispec.size, ispec.size), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(ispec.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(ispec.std, device=x.device).view(1, 3, 1, 1)
        x = ((x.clamp(0, 1) - mean) / std).to(self.image_encoder.dtype)
        return self.image_encoder(x).image_embeds.unsqueeze(1)

    def run_denoiser(self, x_t: torch.Tensor, pixel_values: torch.Tensor) -> None:
        """One denoiser call on ``x_t`` with this representation's conditioning (output discarded)."""
        b = x_t.shape[0]
        dtype = next(self.denoiser.parameters()).dtype
        x_t = x_t.to(dtype)
        timestep = torch.full((b,), self.t, device=x_t.device, dtype=torch.long)
        if self.kind == "dit":
            if self.label == "none":
                labels = torch.zeros(b, dtype=torch.long, device=x_t.device)  # zeroed by the hook installed in encode
            elif self.label == "null":
                labels = torch.full(
                    (b,), int(self.denoiser.config.num_embeds_ada_norm), dtype=torch.long, device=x_t.device
                )
            else:
                labels = torch.full((b,), int(self.label), dtype=torch.long, device=x_t.device)
            self.denoiser(x_t, timestep=timestep, class_labels=labels)
        elif self.kind == "sd3":
            self.denoiser(
                hidden_states=x_t,
                timestep=timestep.to(dtype),
                encoder_hidden_states=self.prompt_embeds.to(dtype).expand(b, -1, -1),
                pooled_projections=self.pooled_embeds.to(dtype).expand(b, -1),
            )
        else:
            if self.kind == "sd-image-variation":
                cond = self._image_conditioning(pixel_values).to(dtype)
            else:
                cond = self.prompt_embeds.to(dtype).expand(b, -1, -1)
            added = None
            if self.kind == "sdxl":
                added = {
                    "text_embeds": self.pooled_embeds.to(dtype).expand(b, -1),
                    "time_ids": self.time_ids.to(dtype).expand(b, -1),
                }
            self.denoiser(x_t, timestep, encoder_hidden_states=cond, added_cond_kwargs=added)

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(device=self.device, dtype=self.vae.dtype)
        x_t = self.noisy_latents(pixel_values)
        captured = {}

        def capture(_module, _args, output):
            captured["out"] = (
                output[-1] if isinstance(output, tuple) else output
            )  # JointTransformerBlock: (context, image)
            raise _StopForward

        handles = [self._capture_module.register_forward_hook(capture)]
        if self.kind == "dit" and self.label == "none":
            for module in self.denoiser.modules():
                if type(module).__name__ == "LabelEmbedding":
                    handles.append(module.register_forward_hook(lambda _m, _a, out: torch.zeros_like(out)))
        try:
            self.run_denoiser(x_t, pixel_values)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if "out" not in captured:  # pragma: no cover - the hook always fires when the block runs
            raise RuntimeError(f"{self.spec}: the denoiser never ran the captured block")
        out = captured["out"]
        if self.is_transformer:
            tokens = out
            if self.merge != "none":
                tokens = merge_2x2(tokens, self.token_grid, self.merge)
        else:
            tokens = out.flatten(2).transpose(1, 2)  # [B, C, h, w] -> [B, h*w, C], row-major
        return self.check_tokens(tokens)


# ------------------------------------------------------------------------------------------ building
def _encode_conditioning(kind: str, pipe: Any, prompt: str, size: int) -> Dict[str, torch.Tensor]:
    device = torch.device("cpu")
    with torch.no_grad():
        if kind == "sd":
            embeds, _ = pipe.encode_prompt(prompt, device, 1, False)
            return {"prompt_embeds": embeds}
        if kind == "sdxl":
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=embeds.dtype)
            expected = pipe.unet.add_embedding.linear_1.in_features
            passed = pipe.unet.config.addition_time_embed_dim * 6 + pooled.shape[-1]
            if expected != passed:
                raise ValueError(
                    f"SDXL U-Net expects an added embedding of {expected} values, the text encoders give {passed}"
                )
            return {"prompt_embeds": embeds, "pooled_embeds": pooled, "time_ids": time_ids}
        if kind == "sd3":
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                prompt_3=None,
                device=device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
            )
            return {"prompt_embeds": embeds, "pooled_embeds": pooled}
    return {}


def _processor_size(value: Any) -> int:
    """An int from an image processor's size field (int, dict or transformers ``SizeDict``)."""
    if isinstance(value, int):
        return value
    for key in ("height", "shortest_edge", "width"):
        entry = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        if entry:
            return int(entry)
    raise ValueError(f"cannot read an image size from {value!r}")


def build_diffusion(
    spec: RepresentationSpec,
    *,
    select_layer: Optional[int] = None,
    torch_dtype=None,
    trust_remote_code: bool = False,
    **_,
) -> DiffusionRepresentation:
    diffusers = _require_diffusers()
    unknown = sorted(set(spec.opts) - _OPTIONS)
    if unknown:
        raise ValueError(
            f"{spec}: unknown option(s) {', '.join(unknown)}; the diffusion family takes "
            f"{', '.join(sorted(_OPTIONS - {'layer'}))}"
        )
    if "layer" in spec.opts:
        raise ValueError(
            f"{spec}: diffusion features have no '?layer='; pick the block with '?block=' (U-Net up block, or "
            "transformer block)"
        )
    index = read_model_index(spec.target)
    cls_name = index.get("_class_name", "")
    if cls_name not in PIPELINES:
        raise ValueError(f"{spec}: unsupported diffusers pipeline {cls_name!r}; supported: {', '.join(PIPELINES)}")
    kind, default_size = PIPELINES[cls_name]
    size = _int_option(spec, "size", default_size)
    prompt = spec.opts.get("prompt", "")
    if kind in ("dit", "sd-image-variation") and prompt:
        raise ValueError(
            f"{spec}: {cls_name} takes no text prompt ("
            + (
                "conditioning is the class label, '?label='"
                if kind == "dit"
                else "conditioning is the image's CLIP embedding"
            )
            + ")"
        )
    if kind != "dit" and "label" in spec.opts:
        raise ValueError(f"{spec}: '?label=' applies to DiT only")

    overrides: Dict[str, Any] = {}
    if "safety_checker" in index:
        overrides["safety_checker"] = None
        overrides["requires_safety_checker"] = False
    if kind == "sd3" and _int_option(spec, "t5", 0) == 0:
        overrides["text_encoder_3"] = None
        overrides["tokenizer_3"] = None
    pipeline_cls = getattr(diffusers, cls_name)
    if torch_dtype is not None:
        # diffusers >= 0.36 names the argument ``dtype`` (``torch_dtype`` is deprecated there)
        import inspect

        from diffusers import pipelines

        try:
            takes_dtype = '"dtype"' in inspect.getsource(pipelines.pipeline_utils.DiffusionPipeline.from_pretrained)
        except (OSError, TypeError):  # no source available
            takes_dtype = False
        overrides["dtype" if takes_dtype else "torch_dtype"] = torch_dtype
    try:
        pipe = pipeline_cls.from_pretrained(spec.target, **overrides)
    except OSError as err:
        raise FileNotFoundError(f"could not load diffusers pipeline {str(spec)!r}: {err}") from err

    conditioning = _encode_conditioning(kind, pipe, prompt, size)
    denoiser = pipe.transformer if kind in ("sd3", "dit") else pipe.unet
    image_encoder = image_spec = None
    if kind == "sd-image-variation":
        image_encoder = pipe.image_encoder
        fe = pipe.feature_extractor
        crop = _processor_size(fe.crop_size if getattr(fe, "do_center_crop", True) else fe.size)
        image_spec = ImageSpec(
            size=crop, mean=tuple(float(x) for x in fe.image_mean), std=tuple(float(x) for x in fe.image_std)
        )
    return DiffusionRepresentation(
        spec,
        kind,
        pipe.vae,
        denoiser,
        pipe.scheduler,
        size=size,
        conditioning=conditioning,
        image_encoder=image_encoder,
        image_encoder_spec=image_spec,
    )
