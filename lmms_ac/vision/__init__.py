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

from typing import Callable, Collection, Dict, Optional, Union

import torch

from lmms_ac.registry import Registry
from lmms_ac.vision.base import ImageSpec, VisionRepresentation, to_rgb
from lmms_ac.vision.spec import RepresentationSpec, check_options, infer_family, parse_spec

RepresentationFactory = Callable[..., VisionRepresentation]
FAMILIES: Registry[RepresentationFactory] = Registry("vision representation family")


def _lazy(module: str, attr: str, options: Collection[str]) -> RepresentationFactory:
    """A factory that imports its implementation module only when used; ``options`` are the spec
    options (``?key=value``) the family takes, checked before anything loads."""

    def factory(spec: RepresentationSpec, **kwargs) -> VisionRepresentation:
        import importlib

        return getattr(importlib.import_module(module), attr)(spec, **kwargs)

    factory.__name__ = f"{module}.{attr}"
    factory.options = frozenset(options)  # type: ignore[attr-defined]
    return factory


# ``backend``: the transformers image processor's backend (pil / torchvision), see lmms_ac/vision/hf.py
FAMILIES.register("clip", _lazy("lmms_ac.vision.hf", "build_clip", {"layer", "backend"}))
FAMILIES.register("siglip", _lazy("lmms_ac.vision.hf", "build_siglip", {"layer", "backend"}))
FAMILIES.register("siglip2", _lazy("lmms_ac.vision.extra_hf", "build_siglip2", {"layer", "size", "backend"}))
FAMILIES.register("dinov2", _lazy("lmms_ac.vision.extra_hf", "build_dinov2", {"layer", "size", "backend"}))
FAMILIES.register("openclip", _lazy("lmms_ac.vision.openclip", "build_openclip", {"layer"}))
FAMILIES.register("concat", _lazy("lmms_ac.vision.concat", "build_concat", ()))  # options go on the parts
FAMILIES.register(
    "diffusion",
    _lazy(
        "lmms_ac.vision.diffusion",
        "build_diffusion",
        {"t", "block", "prompt", "seed", "size", "latent", "merge", "label", "resize", "t5", "layer"},
    ),
)  # 'layer' is declared so that the family's own error names '?block=


def family_options() -> Dict[str, frozenset]:
    """Family -> the spec options it takes (families registered without a declaration are omitted)."""
    return {
        name: FAMILIES.get(name).options
        for name in FAMILIES.names()
        if getattr(FAMILIES.get(name), "options", None) is not None
    }


def load_representation(
    spec: Union[str, RepresentationSpec],
    *,
    select_layer: Optional[int] = None,
    torch_dtype: Optional[torch.dtype] = None,
    device: Optional[Union[str, torch.device]] = None,
    trust_remote_code: bool = False,
    image_backend: Optional[str] = None,
) -> VisionRepresentation:
    """Build the representation named by ``spec`` (see ``lmms_ac.vision.spec`` for the grammar).

    ``select_layer`` is the default layer (-2 when None); a ``?layer=`` in the spec wins.
    ``image_backend`` (``pil`` / ``torchvision``) picks the transformers image processor's backend
    of towers that use one, unless the spec says ``?backend=``; None keeps transformers' default."""
    from lmms_ac.model_args import parse_bool, parse_int

    if isinstance(spec, str):
        spec = parse_spec(spec, set(FAMILIES.names()))
    factory = FAMILIES.get(spec.family)
    options = getattr(factory, "options", None)
    if options is not None:
        check_options(spec, options, family_options())
    if "layer" in spec.opts:  # the spec's own choice wins over the caller's default (e.g. a checkpoint's select layer)
        layer = parse_int(spec.opts["layer"], f"{spec}: layer")
    else:
        layer = select_layer if select_layer is not None else -2
    extra = {} if image_backend is None else {"image_backend": image_backend}
    rep = factory(
        spec,
        select_layer=layer,
        torch_dtype=torch_dtype,
        trust_remote_code=parse_bool(trust_remote_code, "trust_remote_code"),
        **extra,
    )
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
