"""Vision representations: one registry of families, each building a ``VisionRepresentation``.

``load_representation("clip:openai/clip-vit-large-patch14-336")`` returns a module whose
``encode`` gives patch tokens ``[B, N, D]`` from layer -2 (LLaVA-1.5's choice) unless the spec or
the caller picks another layer. Families register a factory
``factory(spec: RepresentationSpec, *, select_layer, torch_dtype, device, trust_remote_code)``;
heavy imports happen inside the factories, not here.
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
