"""Vision representations: one registry of families, each building a ``VisionRepresentation``.

``load_representation("clip:openai/clip-vit-large-patch14-336")`` returns a module whose
``encode`` gives patch tokens ``[B, N, D]`` from layer -2 (LLaVA-1.5's choice) unless the spec or
the caller picks another layer. Families register a factory
``factory(spec: RepresentationSpec, *, select_layer, torch_dtype, device, trust_remote_code)``;
heavy imports happen inside the factories, not here.

Families (spec strings, defaults and notes in ``lmms_ac/vision/FAMILIES.md``): ``clip`` and
``siglip`` (transformers), ``siglip2`` (fixed-resolution checkpoints as SigLIP, NaFlex ones at a
fixed square size), ``dinov2`` (with or without registers, ``?size=``), ``openclip``
(open_clip_torch: hub id, ``MODEL@TAG`` or a local ``open_clip_config.json`` directory),
``concat`` (channel-wise feature combinations, ``concat:a+b``) and ``diffusion`` (one-step
diffusion features through diffusers, an optional extra).
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from lmms_ac.registry import Registry
from lmms_ac.vision.base import ImageSpec, VisionRepresentation, to_rgb
from lmms_ac.vision.spec import RepresentationSpec, infer_family, parse_spec

RepresentationFactory = Callable[..., VisionRepresentation]
FAMILIES: Registry[RepresentationFactory] = Registry("vision representation family")


def _lazy(module: str, attr: str) -> RepresentationFactory:
    """A factory that imports its implementation module only when used."""

    def factory(spec: RepresentationSpec, **kwargs) -> VisionRepresentation:
        import importlib

        return getattr(importlib.import_module(module), attr)(spec, **kwargs)

    factory.__name__ = f"{module}.{attr}"
    return factory


FAMILIES.register("clip", _lazy("lmms_ac.vision.hf", "build_clip"))
FAMILIES.register("siglip", _lazy("lmms_ac.vision.hf", "build_siglip"))
FAMILIES.register("siglip2", _lazy("lmms_ac.vision.extra_hf", "build_siglip2"))
FAMILIES.register("dinov2", _lazy("lmms_ac.vision.extra_hf", "build_dinov2"))
FAMILIES.register("openclip", _lazy("lmms_ac.vision.openclip", "build_openclip"))
FAMILIES.register("concat", _lazy("lmms_ac.vision.concat", "build_concat"))
FAMILIES.register("diffusion", _lazy("lmms_ac.vision.diffusion", "build_diffusion"))


def load_representation(
    spec: Union[str, RepresentationSpec],
    *,
    select_layer: Optional[int] = None,
    torch_dtype: Optional[torch.dtype] = None,
    device: Optional[Union[str, torch.device]] = None,
    trust_remote_code: bool = False,
) -> VisionRepresentation:
    """Build the representation named by ``spec`` (see ``lmms_ac.vision.spec`` for the grammar)."""
    if isinstance(spec, str):
        spec = parse_spec(spec, set(FAMILIES.names()))
    factory = FAMILIES.get(spec.family)
    layer = select_layer if select_layer is not None else int(spec.opts.get("layer", -2))
    rep = factory(spec, select_layer=layer, torch_dtype=torch_dtype, trust_remote_code=trust_remote_code)
    rep.eval().requires_grad_(False)
    if device is not None:
        rep.to(device)
    return rep


__all__ = [
    "FAMILIES",
    "ImageSpec",
    "RepresentationSpec",
    "VisionRepresentation",
    "infer_family",
    "load_representation",
    "parse_spec",
    "to_rgb",
]
