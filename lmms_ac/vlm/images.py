"""Image geometry before the encoder: LLaVA-1.5's pad-to-square with the mean colour."""

from __future__ import annotations

from typing import Sequence, Tuple

from PIL import Image

from lmms_ac.vision.base import to_rgb

ASPECT_MODES = ("auto", "pad", "original")


def expand_to_square(image: Image.Image, fill: Tuple[int, int, int]) -> Image.Image:
    """Centre ``image`` on a square canvas of its longer side (LLaVA's ``expand2square``)."""
    image = to_rgb(image)
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def mean_fill(mean: Sequence[float]) -> Tuple[int, int, int]:
    return tuple(int(x * 255) for x in mean)  # type: ignore[return-value]


def check_image(image: object) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"expected a PIL image, got {type(image).__name__}; video and audio inputs are not supported by "
            "lmms_ac_llava"
        )
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image has no pixels (size {image.size})")
    return image
