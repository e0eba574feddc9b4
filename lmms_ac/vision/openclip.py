"""OpenCLIP vision towers through ``open_clip_torch``.

Spec forms (``openclip:`` family):

* ``openclip:laion/CLIP-ViT-L-14-laion2B-s32B-b82K`` - a hub repository holding
  ``open_clip_config.json`` + weights (loaded as open_clip's ``hf-hub:`` model);
* ``openclip:ViT-L-14@laion2b_s32b_b82k`` - an open_clip model name and pretrained tag (or a
  checkpoint file after the ``@``), as ``open_clip.create_model(name, pretrained=tag)`` takes them;
* ``openclip:/path/to/dir`` - a local directory in the hub layout (``open_clip_config.json`` with
  ``model_cfg``/``preprocess_cfg`` + ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``),
  loaded as open_clip's ``local-dir:`` model. ``hf-hub:``/``local-dir:`` prefixes are accepted as is.

Tokens: the output of the transformer block at ``select_layer`` with the CLS token dropped. Layer
numbering follows transformers' ``hidden_states`` (index 0 = the embeddings after ``ln_pre``, index
``i`` = the output of residual block ``i - 1``; -1 = the last block, -2 = LLaVA's default), so
``openclip:X?layer=-2`` and ``clip:X?layer=-2`` pick the same block of the same network.
Preprocessing is open_clip's own eval transform (resize mode, interpolation, size, mean and std from
the model's ``preprocess_cfg``); ``pixels`` runs it with normalisation switched off.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from PIL import Image

from lmms_ac.vision.base import ImageSpec, VisionRepresentation, to_rgb
from lmms_ac.vision.spec import RepresentationSpec

_HUB_PREFIX = "hf-hub:"
_LOCAL_PREFIX = "local-dir:"


def resolve_openclip_target(target: str) -> Tuple[str, Optional[str]]:
    """Spec target -> ``(model_name, pretrained)`` arguments of ``open_clip.create_model``."""
    if target.startswith((_HUB_PREFIX, _LOCAL_PREFIX)):
        return target, None
    path = os.path.expanduser(target)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "open_clip_config.json")):
            raise FileNotFoundError(
                f"{target!r} is a directory but holds no open_clip_config.json; an OpenCLIP directory holds "
                "open_clip_config.json (model_cfg + preprocess_cfg) and open_clip_model.safetensors, as the hub repos "
                "do"
            )
        return _LOCAL_PREFIX + os.path.abspath(path), None
    if "@" in target:
        name, _, pretrained = target.partition("@")
        if not name or not pretrained:
            raise ValueError(f"openclip spec {target!r}: write 'MODEL@TAG', e.g. 'ViT-L-14@laion2b_s32b_b82k'")
        return name, pretrained
    if target.startswith(("/", ".", "~")) or target.count("/") > 1:
        raise FileNotFoundError(
            f"OpenCLIP directory {target!r} does not exist; pass an existing directory, "
            f"a hub id such as 'laion/CLIP-ViT-L-14-laion2B-s32B-b82K' or 'MODEL@TAG'"
        )
    if "/" in target:
        return _HUB_PREFIX + target, None
    raise ValueError(
        f"openclip spec {target!r} names a model architecture without weights; add a pretrained tag "
        f"('{target}@TAG', tags from open_clip.list_pretrained_tags_by_model('{target}')) or use a hub id"
    )


class OpenCLIPTower(VisionRepresentation):
    """Patch tokens of an open_clip ``VisionTransformer`` (``model.visual``) at ``select_layer``."""

    def __init__(self, spec: str, visual: torch.nn.Module, preprocess_cfg: Dict[str, Any], select_layer: int = -2):
        super().__init__()
        from open_clip.transformer import VisionTransformer

        if not isinstance(visual, VisionTransformer):
            raise NotImplementedError(
                f"{spec}: the openclip family reads patch tokens from open_clip's own VisionTransformer; this model's "
                f"image tower is {type(visual).__name__} (timm/ResNet towers are not supported; for timm ViTs use the "
                f"hub's transformers checkpoint with the clip: or siglip: family where one exists)"
            )
        self.spec = spec
        self.visual = visual
        self.select_layer = int(select_layer)
        self.preprocess_cfg = dict(preprocess_cfg)
        n_layers = len(visual.transformer.resblocks)
        if not -n_layers - 1 <= self.select_layer <= n_layers:
            raise ValueError(
                f"{spec}: select_layer {select_layer} out of range for a {n_layers}-layer tower "
                f"(valid: {-n_layers - 1}..{n_layers})"
            )
        self._hidden_index = self.select_layer % (n_layers + 1)  # index into [embeddings, block 0, ..., block n-1]
        size = visual.image_size
        ph, pw = visual.patch_size
        if size[0] != size[1] or ph != pw:
            raise NotImplementedError(
                f"{spec}: only square inputs and patches are supported, got image {size}, patch {(ph, pw)}"
            )
        self.patch_size = int(ph)
        self.patch_conv = True
        self.grid = (size[0] // ph, size[1] // pw)
        self.hidden_size = int(visual.transformer.width)
        mean = tuple(float(x) for x in self.preprocess_cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        std = tuple(float(x) for x in self.preprocess_cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        self.image_spec = ImageSpec(size=int(size[0]), mean=mean, std=std)
        self._transform = None

    def _pixel_transform(self):
        if self._transform is None:
            import open_clip

            cfg = self.preprocess_cfg
            self._transform = open_clip.image_transform(
                self.image_spec.size,
                is_train=False,
                mean=(0.0, 0.0, 0.0),
                std=(1.0, 1.0, 1.0),
                resize_mode=cfg.get("resize_mode"),
                interpolation=cfg.get("interpolation"),
                fill_color=cfg.get("fill_color", 0),
            )
        return self._transform

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        transform = self._pixel_transform()
        return torch.stack([transform(to_rgb(im)) for im in images])

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        x = self.visual._embeds(pixel_values)  # conv1 + CLS + position embedding + ln_pre: [B, 1 + N, D]
        if self._hidden_index > 0:
            _, inter = self.visual.transformer.forward_intermediates(
                x, indices=[self._hidden_index - 1], stop_early=True
            )
            x = inter[0]
        return self.check_tokens(x[:, 1:])


def build_openclip(
    spec: RepresentationSpec, *, select_layer: int = -2, torch_dtype=None, trust_remote_code: bool = False, **_
) -> OpenCLIPTower:
    try:
        import open_clip
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError("the openclip family needs open_clip_torch: pip install open_clip_torch") from err

    name, pretrained = resolve_openclip_target(spec.target)
    try:
        model = open_clip.create_model(name, pretrained=pretrained, require_pretrained=True)
    except FileNotFoundError:
        raise
    except (RuntimeError, OSError, ValueError) as err:
        raise FileNotFoundError(
            f"could not load OpenCLIP model {str(spec)!r}: {err}. Use a hub id your machine can reach, 'MODEL@TAG', "
            f"or a local directory with open_clip_config.json + weights (mirror it with `huggingface-cli download "
            f"{spec.target}` on a machine with a hub)"
        ) from err
    visual = model.visual  # the text tower is dropped with ``model``
    preprocess_cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    if torch_dtype is not None:
        visual = visual.to(torch_dtype)
    return OpenCLIPTower(str(spec), visual, preprocess_cfg, select_layer)
