"""Test helpers for the C score: an SPair-layout fixture made of real photographs that scikit-image
ships, warped by known transforms, and small ``VisionRepresentation`` encoders."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lmms_ac.images import apply_affine, jpeg_bytes, warp_image
from lmms_ac.scores.spair import image_dir, keypoints_to_json, write_pair
from lmms_ac.vision.base import ImageSpec, VisionRepresentation

# (skimage.data name, SPair-style category)
PHOTOS = (("astronaut", "person"), ("chelsea", "cat"), ("coffee", "cup"), ("rocket", "rocket"))


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1.0]])


def _zoom(s: float, w: int, h: int, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    cx, cy = w / 2.0, h / 2.0
    return np.array([[s, 0, cx - s * cx + dx], [0, s, cy - s * cy + dy], [0, 0, 1.0]])


def _corners(gray: np.ndarray, n: int, margin: int, seed: int) -> np.ndarray:
    """Up to ``n`` Harris corners (x, y) at least ``margin`` px from the border, spread out."""
    from skimage.feature import corner_harris, corner_peaks

    peaks = corner_peaks(corner_harris(gray), min_distance=8, threshold_rel=0.01)
    h, w = gray.shape
    ok = (peaks[:, 0] >= margin) & (peaks[:, 0] < h - margin) & (peaks[:, 1] >= margin) & (peaks[:, 1] < w - margin)
    peaks = peaks[ok]
    rng = np.random.default_rng(seed)
    if len(peaks) > n:
        peaks = peaks[np.sort(rng.choice(len(peaks), n, replace=False))]
    return peaks[:, ::-1].astype(np.float64) + 0.5  # (x, y) at pixel centres


def warps(w: int, h: int) -> Dict[str, Tuple[np.ndarray, Tuple[int, int]]]:
    """name -> (forward affine, output size). ``resize`` changes the canvas (pure scale: the
    letterbox undoes it) and ``shift`` moves by whole encoder cells: both are exactly matchable;
    the others draw on the same canvas with sub-cell shifts and scale changes."""
    s = 0.75
    return {
        "shift": (_shift(32, -16), (w, h)),  # whole 16-px cells at max_side 256 / encoder 128, patch 8
        "shift_odd": (_shift(round(0.09 * w), -round(0.07 * h)), (w, h)),
        "zoom": (_zoom(1.2, w, h), (w, h)),
        "shiftzoom": (_zoom(0.85, w, h, -0.05 * w, 0.04 * h), (w, h)),
        "resize": (np.diag([round(w * s) / w, round(h * s) / h, 1.0]), (round(w * s), round(h * s))),
    }


def write_photo_fixture(
    root: Path,
    *,
    max_side: int = 256,
    n_keypoints: int = 10,
    split: str = "test",
    photos: Sequence[Tuple[str, str]] = PHOTOS,
    seed: int = 0,
) -> List[dict]:
    """Write scikit-image photographs and warped copies in the SPair layout; one pair per
    (photo, warp), source = original. Returns the written pair records."""
    import skimage.data
    from skimage.color import rgb2gray

    records = []
    pair_id = 0
    for name, category in photos:
        arr = getattr(skimage.data, name)()
        image = Image.fromarray(arr).convert("RGB")
        scale = max_side / max(image.size)
        image = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.BICUBIC)
        w, h = image.size
        folder = image_dir(root, category)
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(image))
        kps = _corners(rgb2gray(np.asarray(image)), n_keypoints * 3, margin=min(w, h) // 10, seed=seed)
        bbox = [0.0, 0.0, float(w), float(h)]
        for warp_name, (matrix, out_size) in warps(w, h).items():
            if out_size == (w, h):
                target = warp_image(image, matrix, (0, 0, 0))
            else:
                target = image.resize(out_size, Image.BICUBIC)
            trg = apply_affine(matrix, kps)
            ow, oh = out_size
            m = min(ow, oh) / 8  # keep away from content lost at the borders
            inside = (trg[:, 0] >= m) & (trg[:, 0] < ow - m) & (trg[:, 1] >= m) & (trg[:, 1] < oh - m)
            keep = np.flatnonzero(inside)[:n_keypoints]
            trg_name = f"{name}_{warp_name}.jpg"
            (folder / trg_name).write_bytes(jpeg_bytes(target))
            corners = apply_affine(matrix, [(0, 0), (w, 0), (w, h), (0, h)])
            trg_box = [
                max(0.0, corners[:, 0].min()),
                max(0.0, corners[:, 1].min()),
                min(float(ow), corners[:, 0].max()),
                min(float(oh), corners[:, 1].max()),
            ]
            pair_id += 1
            record = {
                "pair_id": pair_id,
                "src_imname": f"{name}.jpg",
                "trg_imname": trg_name,
                "src_imsize": [w, h, 3],
                "trg_imsize": [ow, oh, 3],
                "src_bndbox": bbox,
                "trg_bndbox": [round(v, 2) for v in trg_box],
                "category": category,
                "src_kps": keypoints_to_json(kps[keep]),
                "trg_kps": keypoints_to_json(trg[keep]),
                "kps_ids": [str(k) for k in keep],
            }
            write_pair(root, split, record)
            records.append(record)
    return records


# ----------------------------------------------------------------------------- test encoders
class CountingEncoder(VisionRepresentation):
    """Base for test encoders: counts images and calls that reach ``encode``."""

    def __init__(self, size: int = 128, patch: int = 8, hidden: int = 16):
        super().__init__()
        self.spec = type(self).__name__
        self.image_spec = ImageSpec(size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        self.patch_size = patch
        self.grid = (size // patch, size // patch)
        self.hidden_size = hidden
        self.images_seen = 0
        self.calls = 0

    def count(self, pixel_values: torch.Tensor) -> None:
        assert pixel_values.shape[1:] == (3, self.image_spec.size, self.image_spec.size), pixel_values.shape
        self.images_seen += int(pixel_values.shape[0])
        self.calls += 1


class PixelPatchEncoder(CountingEncoder):
    """Features = the normalised pixels of each patch, the mean colour of its 3x3 and 5x5 patch
    neighbourhoods (context) and its (row, col) position (small weight, a tie-breaker)."""

    def __init__(self, size: int = 128, patch: int = 8, pos_weight: float = 0.5, context_weight: float = 10.0):
        super().__init__(size, patch, hidden=3 * patch * patch + 3 * 9 + 3 * 25 + 2)
        self.pos_weight = pos_weight
        self.context_weight = context_weight

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.count(pixel_values)
        b, p = pixel_values.shape[0], self.patch_size
        gh, gw = self.grid
        raw = F.unfold(pixel_values, kernel_size=p, stride=p).transpose(1, 2)  # [B, N, 3p^2]
        cells = F.avg_pool2d(pixel_values, kernel_size=p)  # [B, 3, gh, gw] mean colour per patch
        ctx = [self.context_weight * F.unfold(cells, kernel_size=k, padding=k // 2).transpose(1, 2) for k in (3, 5)]
        rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        pos = torch.stack([rows.flatten() / gh, cols.flatten() / gw], dim=1).to(pixel_values)
        pos = (self.pos_weight * pos).expand(b, -1, -1)
        return torch.cat([raw, *ctx, pos], dim=2)


class ConstantEncoder(CountingEncoder):
    """Every patch gets the same feature: all similarities tie."""

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.count(pixel_values)
        return torch.ones(pixel_values.shape[0], self.num_tokens, self.hidden_size, dtype=pixel_values.dtype)
