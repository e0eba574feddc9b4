"""Feature combinations: channel-wise concatenation of two (or more) representations.

Spec: ``concat:<part>+<part>[+...]``, each part a full spec of its own, e.g.
``concat:clip:openai/clip-vit-large-patch14+dinov2:facebook/dinov2-large`` (16x16 tokens at 224) or
``concat:clip:openai/clip-vit-large-patch14-336+dinov2:facebook/dinov2-large?size=336`` (24x24 at 336).
Options belong to the parts (``?layer=`` on a part wins over the caller's ``select_layer``, which
applies to the parts that name no layer).

Contract: every part must give the same token grid (an error names each part's grid and the input
sizes that would make them agree); ``hidden_size`` is the sum of the parts' sizes, channels in part
order (``part_slices`` / ``split`` recover each part's block, which the C score uses to
"L2-normalise each part, concatenate, re-normalise").

One shared input geometry, so image hooks (perturbations on pixels) see one image:

* ``pixels(images)`` is the pixels of the part with the largest input size (its own resize/crop, in
  [0, 1]);
* ``normalize`` is the identity (``image_spec.mean = 0, std = 1``): the tensor handed to ``encode``
  stays in [0, 1];
* ``encode`` gives each part the same pixels, resized (bicubic, antialiased) to the part's own size
  when it differs and normalised with the part's own mean/std, and concatenates the tokens.

So each part sees the same crop of the image (its own resize-then-crop ratio, e.g. DINOv2's
256 -> 224, is not applied inside a combination; the token grids would not line up otherwise).
"""

from __future__ import annotations

import functools
import os
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from PIL import Image

from lmms_ac.vision.base import ImageSpec, VisionRepresentation
from lmms_ac.vision.spec import RepresentationSpec, infer_family, parse_spec

# families whose input size can be chosen in the spec with '?size='
_SIZEABLE = {"dinov2", "diffusion"}


def _known_families() -> set:
    from lmms_ac.vision import FAMILIES

    return set(FAMILIES.names())


def split_parts(target: str, known: Optional[set] = None) -> List[str]:
    """Split ``a+b`` into part specs; a ``+`` starts a new part only when what follows is ``family:...``
    for a known family or a family-inferable hub id/path (so ``prompt=a+cat`` stays inside its part)."""
    known = known if known is not None else _known_families()
    pieces = target.split("+")
    parts: List[str] = []
    for piece in pieces:
        head = piece.split("?", 1)[0]
        family = head.partition(":")[0] if ":" in head else None
        starts_part = (family in known) or (family is None and "/" in head and infer_family(head) is not None)
        if parts and not starts_part:
            parts[-1] += "+" + piece
        else:
            parts.append(piece)
    return [p.strip() for p in parts if p.strip()]


def split_multi_tower(name: str) -> Optional[List[str]]:
    """Original-LLaVA multi-encoder ``mm_vision_tower`` names joined by ``.`` -> the part names, else None.

    ``openai/clip-vit-large-patch14.facebook/dinov2-large`` -> ``['openai/clip-vit-large-patch14',
    'facebook/dinov2-large']``. A ``.`` splits only when what follows starts a new ``org/name`` (or
    ``family:...``) and what precedes is already a complete one, so dots inside names
    (``stabilityai/stable-diffusion-xl-base-1.0``, ``timm/vit_large_patch14_clip_224.openai``) stay.
    Existing local paths are never split."""
    if not name or os.path.exists(os.path.expanduser(name)):
        return None
    known = _known_families()
    parts: List[str] = []
    for piece in name.split("."):
        head = piece.split("?", 1)[0]
        prefixed = ":" in head and head.partition(":")[0] in known
        new_part = bool(parts) and ("/" in parts[-1]) and (prefixed or ("/" in head and not head.startswith("/")))
        if parts and not new_part:
            parts[-1] += "." + piece
        else:
            parts.append(piece)
    return parts if len(parts) >= 2 else None


def multi_tower_spec(name: str) -> Optional[str]:
    """``split_multi_tower`` as a ``concat:`` spec string, or None for a single tower."""
    parts = split_multi_tower(name)
    return "concat:" + "+".join(parts) if parts else None


def _grid_error(parts: Sequence[VisionRepresentation]) -> str:
    desc = "; ".join(
        f"{p.spec} gives a {p.grid[0]}x{p.grid[1]} grid ({p.image_size} px / {p.patch_size} px patches)" for p in parts
    )
    hints = []
    for target in parts:
        for other in parts:
            if other is target:
                continue
            family = str(target.spec).partition(":")[0]
            need = other.grid[0] * target.patch_size
            if family in _SIZEABLE:
                hints.append(
                    f"'{_with_size(target.spec, need)}' matches {other.spec}'s {other.grid[0]}x{other.grid[1]} grid"
                )
            else:
                hints.append(f"{target.spec} would need {need} px input to match {other.spec}")
    hint = "; ".join(dict.fromkeys(hints))
    return (
        f"concat: the parts' token grids differ ({desc}); channel-wise concatenation needs the same grid. "
        f"Pick resolutions that agree, e.g. CLIP-224 + DINOv2 at 224 or CLIP-336 + DINOv2 '?size=336'. Hints: {hint}"
    )


def _with_size(spec: str, size: int) -> str:
    base, _, query = spec.partition("?")
    opts = [kv for kv in query.split("&") if kv and not kv.startswith("size=")] + [f"size={size}"]
    return f"{base}?{'&'.join(opts)}"


class ConcatRepresentation(VisionRepresentation):
    """Channel-wise concatenation of parts that share one token grid."""

    def __init__(self, spec: str, parts: Sequence[VisionRepresentation]):
        super().__init__()
        if len(parts) < 2:
            raise ValueError(f"{spec}: a combination needs at least two parts joined by '+'")
        self.spec = spec
        self.parts = torch.nn.ModuleList(parts)
        grids = {tuple(p.grid) for p in parts}
        if len(grids) != 1:
            raise ValueError(_grid_error(parts))
        self.grid = tuple(parts[0].grid)
        self.hidden_size = sum(int(p.hidden_size) for p in parts)
        bounds, start = [], 0
        for p in parts:
            bounds.append((start, start + int(p.hidden_size)))
            start += int(p.hidden_size)
        self.part_slices: List[Tuple[int, int]] = bounds
        self._lead = max(range(len(parts)), key=lambda i: parts[i].image_size)
        size = parts[self._lead].image_size
        self.patch_size = size // self.grid[0]
        self.image_spec = ImageSpec(size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.parts[self._lead].pixels(images)

    def part_inputs(self, pixel_values: torch.Tensor) -> List[torch.Tensor]:
        """The normalised input each part's ``encode`` receives for shared [0, 1] pixels."""
        out = []
        for part in self.parts:
            x = pixel_values
            if x.shape[-1] != part.image_size or x.shape[-2] != part.image_size:
                x = (
                    F.interpolate(
                        x.float(),
                        size=(part.image_size, part.image_size),
                        mode="bicubic",
                        align_corners=False,
                        antialias=True,
                    )
                    .clamp(0, 1)
                    .to(pixel_values.dtype)
                )
            out.append(part.normalize(x))
        return out

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = [part.encode(x) for part, x in zip(self.parts, self.part_inputs(pixel_values), strict=True)]
        dtype = functools.reduce(torch.promote_types, [t.dtype for t in tokens])
        return self.check_tokens(torch.cat([t.to(dtype) for t in tokens], dim=-1))

    def split(self, tokens: torch.Tensor) -> List[torch.Tensor]:
        """Concatenated tokens ``[..., hidden_size]`` -> one tensor per part."""
        return [tokens[..., a:b] for a, b in self.part_slices]


def build_concat(
    spec: RepresentationSpec,
    *,
    select_layer: Optional[int] = None,
    torch_dtype=None,
    trust_remote_code: bool = False,
    image_backend: Optional[str] = None,
    **_,
) -> ConcatRepresentation:
    from lmms_ac.vision import FAMILIES, family_options, load_representation
    from lmms_ac.vision.spec import check_options

    known = _known_families()
    texts = split_parts(spec.target, known)
    if len(texts) < 2:
        raise ValueError(
            f"concat:{spec.target}: a combination needs at least two parts joined by '+', e.g. "
            f"'concat:clip:openai/clip-vit-large-patch14+dinov2:facebook/dinov2-large'"
        )
    part_specs = []
    for text in texts:  # every part's spec and options are checked before any part loads
        part_spec = parse_spec(text, known)
        if part_spec.family == "concat":
            raise ValueError(f"concat:{spec.target}: nested combinations are not supported; list all parts with '+'")
        options = getattr(FAMILIES.get(part_spec.family), "options", None)
        if options is not None:
            check_options(part_spec, options, family_options())
        part_specs.append(part_spec)
    parts = []
    for part_spec in part_specs:
        layer = None if "layer" in part_spec.opts else select_layer
        parts.append(
            load_representation(
                part_spec,
                select_layer=layer,
                torch_dtype=torch_dtype,
                trust_remote_code=trust_remote_code,
                image_backend=image_backend,
            )
        )
    return ConcatRepresentation(str(spec), parts)
