"""Vision towers through transformers: OpenAI CLIP and SigLIP (more families register elsewhere).

A tower is built from a hub id or local directory (``clip:openai/clip-vit-large-patch14-336``), or
wraps an already-loaded vision model (the tower inside a llava-hf checkpoint). Preprocessing uses
the tower's own Hugging Face image processor (resize, crop, mean/std from its config).

Image processor backend (``?backend=pil|torchvision`` on the spec, or ``image_backend=`` of the
loader): transformers 5 has two implementations of each processor. ``pil`` resizes with PIL, as
transformers 4 (and so the original LLaVA code, LLaVA-1.5's training and the law paper's checkpoints)
did; ``torchvision`` is transformers 5's default, whose bicubic resize differs from PIL's by one grey
level in a few values per image (CLIP features then differ by up to ~1e-2). The original-format
loader picks ``pil``; llava-hf checkpoints keep transformers' default unless told otherwise.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import torch
from PIL import Image

from lmms_ac.vision.base import ImageSpec, VisionRepresentation, to_rgb
from lmms_ac.vision.spec import RepresentationSpec

IMAGE_BACKENDS = ("pil", "torchvision")


def resolve_backend(spec: Optional[RepresentationSpec], image_backend: Optional[str]) -> Optional[str]:
    """The processor backend to load: the spec's ``?backend=``, else ``image_backend``, else None
    (transformers' default). ``auto`` means None."""
    chosen = (spec.opts.get("backend") if spec is not None else None) or image_backend
    if chosen in (None, "", "auto"):
        return None
    if chosen not in IMAGE_BACKENDS:
        where = f"{spec}: " if spec is not None and spec.opts.get("backend") else ""
        raise ValueError(
            f"{where}unknown image processor backend {chosen!r}; choose pil (PIL resize, as transformers 4 and "
            f"the original LLaVA code) or torchvision (transformers 5's default)"
        )
    return chosen


def load_image_processor(target: str, backend: Optional[str] = None, trust_remote_code: bool = False) -> Any:
    """``AutoImageProcessor`` of ``target`` with the given backend (None: transformers' default)."""
    import transformers

    kwargs = {"backend": backend} if backend else {}
    processor = transformers.AutoImageProcessor.from_pretrained(target, trust_remote_code=trust_remote_code, **kwargs)
    got = processor_backend(processor)
    if backend and got != backend:
        raise ValueError(
            f"{target}: asked for the {backend} image processor backend but transformers gave "
            f"{type(processor).__name__} "
            f"({got}); is {'Pillow' if backend == 'pil' else 'torchvision'} installed?"
        )
    return processor


def processor_backend(processor: Any) -> str:
    """``pil`` or ``torchvision`` (or the class name of a processor that names no backend)."""
    return str(getattr(processor, "backend", None) or type(processor).__name__)


def _processor_size(processor: Any) -> int:
    crop = getattr(processor, "crop_size", None)
    size = getattr(processor, "size", None)
    for candidate in (crop, size):
        if isinstance(candidate, dict):
            for key in ("height", "shortest_edge", "width"):
                if candidate.get(key):
                    return int(candidate[key])
        elif isinstance(candidate, int):
            return candidate
    raise ValueError(f"cannot read the input size of image processor {type(processor).__name__}")


class HFVisionTower(VisionRepresentation):
    """Patch tokens of a transformers vision model at ``select_layer``.

    ``num_prefix_tokens`` leading tokens (CLS, registers) are dropped so the output is exactly the
    patch grid, as LLaVA-1.5's ``mm_vision_select_feature='patch'`` does.
    """

    def __init__(
        self,
        spec: str,
        model: torch.nn.Module,
        processor: Any,
        select_layer: int = -2,
        num_prefix_tokens: Optional[int] = None,
    ):
        super().__init__()
        self.spec = spec
        self.model = model
        self.processor = processor
        self.select_layer = int(select_layer)
        cfg = model.config
        size = int(getattr(cfg, "image_size", 0) or _processor_size(processor))
        self.patch_size = int(cfg.patch_size)
        self.grid = (size // self.patch_size, size // self.patch_size)
        self.patch_conv = True
        self.hidden_size = int(cfg.hidden_size)
        mean = tuple(float(x) for x in processor.image_mean)
        std = tuple(float(x) for x in processor.image_std)
        self.image_spec = ImageSpec(size=size, mean=mean, std=std)
        n_layers = int(cfg.num_hidden_layers)
        if not -n_layers - 1 <= self.select_layer <= n_layers:
            raise ValueError(
                f"{spec}: select_layer {select_layer} out of range for a {n_layers}-layer tower (valid: "
                f"{-n_layers - 1}..{n_layers})"
            )
        if num_prefix_tokens is None:
            num_prefix_tokens = 1 if cfg.model_type.startswith("clip") else 0
        self.num_prefix_tokens = num_prefix_tokens

    def _process(self, images: Sequence[Image.Image], **kwargs) -> torch.Tensor:
        images = [to_rgb(im) for im in images]
        return self.processor(images=images, return_tensors="pt", **kwargs)["pixel_values"]

    @property
    def image_backend(self) -> str:
        return processor_backend(self.processor)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        # the processor itself, so the pixels equal what that same processor (same class, same backend)
        # gives transformers' model; another backend's pixels differ (see the module docstring)
        return self._process(images)

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self._process(images, do_normalize=False)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        out = self.model(pixel_values, output_hidden_states=True, return_dict=True)
        tokens = out.hidden_states[self.select_layer][:, self.num_prefix_tokens :]
        return self.check_tokens(tokens)


def load_hf_tower(
    spec: RepresentationSpec,
    model_cls_name: str,
    select_layer: int,
    torch_dtype,
    trust_remote_code: bool,
    num_prefix_tokens: Optional[int] = None,
    image_backend: Optional[str] = None,
) -> HFVisionTower:
    import transformers

    target = spec.target
    looks_local = target.startswith(("/", ".", "~")) or target.count("/") > 1  # hub ids are 'org/name'
    if looks_local and not os.path.exists(os.path.expanduser(target)):
        raise FileNotFoundError(
            f"vision tower directory {target!r} does not exist (spec {spec}); pass a hub id or an existing local "
            "directory"
        )
    model_cls = getattr(transformers, model_cls_name)
    backend = resolve_backend(spec, image_backend)
    try:
        model = model_cls.from_pretrained(target, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        processor = load_image_processor(target, backend, trust_remote_code)
    except OSError as err:
        raise FileNotFoundError(
            f"could not load vision tower {str(spec)!r}: {err}. Use a hub id your machine can reach, a local "
            f"directory with config.json + weights + preprocessor_config.json, or mirror it with "
            f"`huggingface-cli download {target}` on a machine with a hub."
        ) from err
    return HFVisionTower(str(spec), model, processor, select_layer, num_prefix_tokens)


def build_clip(
    spec: RepresentationSpec,
    *,
    select_layer: int = -2,
    torch_dtype=None,
    trust_remote_code: bool = False,
    image_backend: Optional[str] = None,
    **_,
) -> HFVisionTower:
    return load_hf_tower(
        spec,
        "CLIPVisionModel",
        select_layer,
        torch_dtype,
        trust_remote_code,
        num_prefix_tokens=1,
        image_backend=image_backend,
    )


def build_siglip(
    spec: RepresentationSpec,
    *,
    select_layer: int = -2,
    torch_dtype=None,
    trust_remote_code: bool = False,
    image_backend: Optional[str] = None,
    **_,
) -> HFVisionTower:
    return load_hf_tower(
        spec,
        "SiglipVisionModel",
        select_layer,
        torch_dtype,
        trust_remote_code,
        num_prefix_tokens=0,
        image_backend=image_backend,
    )
