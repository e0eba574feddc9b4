"""Image helpers shared by the data generators: JPEG encoding and affine warps of images and points.

Every generator that writes JPEGs encodes through :func:`jpeg_bytes` with its own settings, which are
part of what it produced (a stored image's bytes, and the scores or hashes made from them)."""

from __future__ import annotations

import io
from typing import Any, Optional

import numpy as np
from PIL import Image


def jpeg_bytes(image: Image.Image, quality: int = 95, subsampling: Optional[int] = None) -> bytes:
    """``image`` encoded as JPEG at ``quality``; ``subsampling`` (Pillow's: 0 is 4:4:4) is passed only
    when given, so ``None`` keeps Pillow's default (4:2:0)."""
    options: dict = {"quality": quality}
    if subsampling is not None:
        options["subsampling"] = subsampling
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **options)
    return buf.getvalue()


def apply_affine(matrix: np.ndarray, xy: Any) -> np.ndarray:
    """Points ``[K, 2]`` under the forward affine ``matrix`` (3x3)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def warp_image(image: Image.Image, matrix: np.ndarray, fill: tuple) -> Image.Image:
    """Draw ``image`` under the forward affine ``matrix`` on a canvas of the same size (Pillow
    samples at pixel centres, so continuous coordinates map exactly by ``matrix``)."""
    inv = np.linalg.inv(matrix)
    return image.transform(
        image.size, Image.AFFINE, data=tuple(inv[:2].ravel()), resample=Image.BICUBIC, fillcolor=fill
    )
