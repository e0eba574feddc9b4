"""The one interface every vision representation implements.

A representation turns images into a grid of patch tokens ``[B, N, D]`` (``N = grid[0] * grid[1]``,
row-major, no CLS/register tokens) taken from a chosen layer. Preprocessing is split in two so that
callers that do their own geometry (the C score pads images itself; image perturbations act on
pixels) can reuse the normalisation alone:

* ``pixels(images)`` - PIL images of any size/mode -> ``[B, 3, S, S]`` float tensor in [0, 1]
  (the encoder's own resize + centre crop, as its Hugging Face image processor does);
* ``normalize(pixels)`` - a ``[B, 3, S, S]`` float tensor in [0, 1] -> normalised tensor;
* ``preprocess(images)`` = ``normalize(pixels(images))``;
* ``encode(pixel_values)`` - normalised tensor -> patch tokens ``[B, N, D]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
from PIL import Image


@dataclass(frozen=True)
class ImageSpec:
    """Geometry and normalisation of an encoder's square input."""

    size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (RGBA, LA, P, L, 1, I;16, CMYK...) -> RGB; transparent pixels become black."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))
        background.paste(rgba, mask=rgba.split()[3])
        return background
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16/32-bit greyscale: rescale to 8 bits instead of clipping
        import numpy as np

        arr = np.asarray(image, dtype="float64")
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else arr * 0
        return Image.fromarray(arr.astype("uint8"), "L").convert("RGB")
    return image.convert("RGB")


class VisionRepresentation(torch.nn.Module):
    """Base class: subclasses set ``spec``, ``image_spec``, ``grid``, ``patch_size``, ``hidden_size``
    and implement ``encode``; ``pixels`` defaults to shortest-side bicubic resize + centre crop."""

    spec: str
    image_spec: ImageSpec
    grid: Tuple[int, int]
    patch_size: int
    hidden_size: int

    #: the tokens come from a patch convolution (ViTs): ``grid x patch_size`` pixels are seen and any remainder of
    #: the input is dropped (SigLIP-so400m at 384 px: 27 x 14 = 378 px, the last 6 rows and columns are never seen)
    patch_conv: bool = False

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def covered_size(self) -> int:
        """Pixels (from the top-left corner of the square input) that the token grid covers, one cell per token."""
        if self.patch_conv and self.grid[0] == self.grid[1]:
            return min(self.image_size, int(self.grid[0]) * int(self.patch_size))
        return self.image_size

    @property
    def image_size(self) -> int:
        return self.image_spec.size

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.float32

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.image_spec.mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_spec.std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.normalize(self.pixels(images))

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        import numpy as np

        size = self.image_spec.size
        out: List[torch.Tensor] = []
        for image in images:
            image = to_rgb(image)
            w, h = image.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            image = image.resize((nw, nh), Image.BICUBIC)
            left, top = (nw - size) // 2, (nh - size) // 2
            image = image.crop((left, top, left + size, top + size))
            out.append(torch.from_numpy(np.asarray(image, dtype="float32") / 255.0).permute(2, 0, 1))
        return torch.stack(out)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encode(pixel_values)

    def check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Assert the documented output contract (used by subclasses and tests)."""
        if tokens.ndim != 3 or tokens.shape[1] != self.num_tokens or tokens.shape[2] != self.hidden_size:
            raise RuntimeError(
                f"{self.spec}: expected tokens [B, {self.num_tokens}, {self.hidden_size}], got {tuple(tokens.shape)}"
            )
        return tokens
