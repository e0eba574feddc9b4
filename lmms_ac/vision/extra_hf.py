"""More transformers towers: SigLIP2 and DINOv2 (with or without registers).

``siglip2:`` - two kinds of SigLIP2 checkpoints exist on the hub:

* fixed-resolution ones (``google/siglip2-large-patch16-256``, ``google/siglip2-base-patch16-224``,
  ... - the kind the law study uses) are stored as ``model_type: siglip`` and load with
  ``SiglipVisionModel``: handled exactly like the ``siglip:`` family (``HFVisionTower``, no prefix
  tokens, the checkpoint's own ``SiglipImageProcessor``);
* NaFlex ones (``google/siglip2-base-patch16-naflex``, ``model_type: siglip2``) load with
  ``Siglip2VisionModel``, which takes flattened patches plus ``pixel_attention_mask`` and
  ``spatial_shapes``. They are run here at one fixed square resolution (``?size=``, default the
  largest multiple of the patch size whose grid fits the processor's ``max_num_patches``, 256 for
  ``max_num_patches=256`` and patch 16) so the output is a fixed grid like every other family; the
  NaFlex processor's aspect-ratio-preserving resize is not used.

``dinov2:`` - ``Dinov2Model`` (``model_type: dinov2``) or ``Dinov2WithRegistersModel``
(``dinov2_with_registers``): patch tokens only (CLS and register tokens dropped) from
``hidden_states[select_layer]`` (before the final layer norm, as LLaVA-style DINOv2 towers take them).
Input resolution: the processor's crop size (224 for ``facebook/dinov2-*``) or ``?size=S`` (DINOv2
interpolates its position embeddings); the processor's resize-then-crop ratio is kept (256 -> 224
becomes round(S * 256 / 224) -> S). Mean/std from the processor.
"""

from __future__ import annotations

import math
import os
from typing import Any, Optional, Sequence

import torch
from PIL import Image

from lmms_ac.vision.base import ImageSpec, VisionRepresentation
from lmms_ac.vision.hf import HFVisionTower, load_hf_tower, load_image_processor, resolve_backend
from lmms_ac.vision.spec import RepresentationSpec


def _model_type(spec: RepresentationSpec, trust_remote_code: bool) -> str:
    import transformers

    target = spec.target
    looks_local = target.startswith(("/", ".", "~")) or target.count("/") > 1
    if looks_local and not os.path.exists(os.path.expanduser(target)):
        raise FileNotFoundError(
            f"vision tower directory {target!r} does not exist (spec {spec}); pass a hub id or an existing local "
            "directory"
        )
    try:
        config_dict, _ = transformers.PretrainedConfig.get_config_dict(target, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise FileNotFoundError(
            f"could not load vision tower {str(spec)!r}: {err}. Use a hub id your machine can reach, a local directory "
            "with config.json + weights + preprocessor_config.json, or mirror it with `huggingface-cli download "
            f"{target}` "
            f"on a machine with a hub."
        ) from err
    return str(config_dict.get("model_type", ""))


def _size_entry(value: Any, keys: Sequence[str]) -> Optional[int]:
    """An int from a processor size field: a dict, a transformers ``SizeDict`` or an int."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    for key in keys:
        entry = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        if entry:
            return int(entry)
    return None


def _size_option(spec: RepresentationSpec) -> Optional[int]:
    value = spec.opts.get("size")
    if value in (None, ""):
        return None
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"{spec}: size={value!r} is not an integer") from None
    if size <= 0:
        raise ValueError(f"{spec}: size must be positive, got {size}")
    return size


# --------------------------------------------------------------------------------------------- SigLIP2
class Siglip2NaflexTower(VisionRepresentation):
    """A NaFlex ``Siglip2VisionModel`` run at a fixed square resolution."""

    def __init__(
        self, spec: str, model: torch.nn.Module, processor: Any, select_layer: int = -2, size: Optional[int] = None
    ):
        super().__init__()
        self.spec = spec
        self.model = model
        self.processor = processor
        self.select_layer = int(select_layer)
        cfg = model.config
        self.patch_size = int(cfg.patch_size)
        if size is None:
            max_patches = int(getattr(processor, "max_num_patches", 0) or cfg.num_patches)
            size = self.patch_size * int(math.isqrt(max_patches))
        if size % self.patch_size:
            raise ValueError(f"{spec}: size {size} is not a multiple of the patch size {self.patch_size}")
        g = size // self.patch_size
        self.grid = (g, g)
        self.hidden_size = int(cfg.hidden_size)
        self.image_spec = ImageSpec(
            size=size,
            mean=tuple(float(x) for x in processor.image_mean),
            std=tuple(float(x) for x in processor.image_std),
        )
        n_layers = int(cfg.num_hidden_layers)
        if not -n_layers - 1 <= self.select_layer <= n_layers:
            raise ValueError(
                f"{spec}: select_layer {select_layer} out of range for a {n_layers}-layer tower (valid: "
                f"{-n_layers - 1}..{n_layers})"
            )

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> ``[B, N, p*p*3]`` in the layout of ``Siglip2ImageProcessor`` (row-major patches, (y,
        x, c) inside)."""
        b, c, h, w = pixel_values.shape
        p = self.patch_size
        x = pixel_values.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        b = pixel_values.shape[0]
        patches = self.patchify(pixel_values)
        spatial_shapes = torch.tensor([list(self.grid)] * b, dtype=torch.long, device=pixel_values.device)
        mask = torch.ones(b, patches.shape[1], dtype=torch.long, device=pixel_values.device)
        out = self.model(
            pixel_values=patches,
            pixel_attention_mask=mask,
            spatial_shapes=spatial_shapes,
            output_hidden_states=True,
            return_dict=True,
        )
        return self.check_tokens(out.hidden_states[self.select_layer])


def build_siglip2(
    spec: RepresentationSpec,
    *,
    select_layer: int = -2,
    torch_dtype=None,
    trust_remote_code: bool = False,
    image_backend: Optional[str] = None,
    **_,
):
    model_type = _model_type(spec, trust_remote_code)
    if model_type in ("siglip", "siglip_vision_model"):
        if _size_option(spec) is not None:
            raise ValueError(f"{spec}: fixed-resolution SigLIP2 checkpoints run at their own size; drop '?size='")
        return load_hf_tower(
            spec,
            "SiglipVisionModel",
            select_layer,
            torch_dtype,
            trust_remote_code,
            num_prefix_tokens=0,
            image_backend=image_backend,
        )
    if model_type not in ("siglip2", "siglip2_vision_model"):
        raise ValueError(
            f"{spec}: expected a SigLIP2 checkpoint (model_type siglip or siglip2), found model_type {model_type!r}"
        )
    import transformers

    try:
        model = transformers.Siglip2VisionModel.from_pretrained(
            spec.target, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
        processor = load_image_processor(spec.target, resolve_backend(spec, image_backend), trust_remote_code)
    except OSError as err:
        raise FileNotFoundError(f"could not load vision tower {str(spec)!r}: {err}") from err
    return Siglip2NaflexTower(str(spec), model, processor, select_layer, _size_option(spec))


# ---------------------------------------------------------------------------------------------- DINOv2
class Dinov2Tower(HFVisionTower):
    """DINOv2 patch tokens at a chosen square resolution (CLS and register tokens dropped)."""

    def __init__(
        self, spec: str, model: torch.nn.Module, processor: Any, select_layer: int = -2, size: Optional[int] = None
    ):
        cfg = model.config
        n_prefix = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        super().__init__(spec, model, processor, select_layer, num_prefix_tokens=n_prefix)
        crop = _size_entry(getattr(processor, "crop_size", None), ("height", "width"))
        resize = _size_entry(getattr(processor, "size", None), ("shortest_edge", "height", "width"))
        if crop is None or not getattr(processor, "do_center_crop", True):
            crop = resize
        if crop is None:
            raise ValueError(f"{spec}: cannot read the input size of image processor {type(processor).__name__}")
        resize = resize or crop
        size = int(size or crop)
        if size < self.patch_size:
            raise ValueError(f"{spec}: size {size} is smaller than the patch size {self.patch_size}")
        self.resize_to = max(size, round(size * resize / crop))
        self.grid = (size // self.patch_size, size // self.patch_size)
        self.image_spec = ImageSpec(size=size, mean=self.image_spec.mean, std=self.image_spec.std)

    def _process(self, images: Sequence[Image.Image], **kwargs) -> torch.Tensor:
        kwargs.setdefault("size", {"shortest_edge": self.resize_to})
        kwargs.setdefault("crop_size", {"height": self.image_spec.size, "width": self.image_spec.size})
        return super()._process(images, **kwargs)


def build_dinov2(
    spec: RepresentationSpec,
    *,
    select_layer: int = -2,
    torch_dtype=None,
    trust_remote_code: bool = False,
    image_backend: Optional[str] = None,
    **_,
):
    import transformers

    model_type = _model_type(spec, trust_remote_code)
    classes = {"dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel"}
    if model_type not in classes:
        raise ValueError(
            f"{spec}: expected a DINOv2 checkpoint (model_type dinov2 or dinov2_with_registers), found {model_type!r}"
        )
    model_cls = getattr(transformers, classes[model_type])
    try:
        model = model_cls.from_pretrained(spec.target, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        processor = load_image_processor(spec.target, resolve_backend(spec, image_backend), trust_remote_code)
    except OSError as err:
        raise FileNotFoundError(f"could not load vision tower {str(spec)!r}: {err}") from err
    return Dinov2Tower(str(spec), model, processor, select_layer, _size_option(spec))
