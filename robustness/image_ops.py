"""Image-level ops on one image ``[3, H, W]`` in [0, 1] (the encoder's square input, before normalisation).

Each op returns a new tensor of the same shape, dtype and device; random draws come from a CPU
generator the caller passes in (see :mod:`lmms_ac.robustness.context`).
"""

from __future__ import annotations

from typing import Tuple

import torch

from .grid import cell_bounds, count_for_ratio, non_identity_permutation


def _check_image(image: torch.Tensor) -> None:
    if image.ndim != 3:
        raise ValueError(f"expected one image [C, H, W], got shape {tuple(image.shape)}")


def patch_shuffle(image: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Cut the image into an ``n x n`` grid of tiles and shuffle the tiles.

    Tiles are ``H // n`` by ``W // n`` pixels, laid from the top-left corner. When ``H`` or ``W`` is
    not divisible by ``n`` the bottom/right border (``H % n`` rows, ``W % n`` columns) is left in
    place, untouched; only the divisible region is shuffled. The tile order is a random permutation
    that is never the identity.
    """
    _check_image(image)
    c, h, w = image.shape
    if n < 2 or n > min(h, w):
        raise ValueError(f"patch shuffle needs 2 <= n <= min(H, W), got n={n} for {h}x{w}")
    th, tw = h // n, w // n
    region = image[:, : n * th, : n * tw]
    tiles = region.reshape(c, n, th, n, tw).permute(1, 3, 0, 2, 4).reshape(n * n, c, th, tw)
    perm = non_identity_permutation(n * n, generator).to(image.device)
    shuffled = tiles[perm].reshape(n, n, c, th, tw).permute(2, 0, 3, 1, 4).reshape(c, n * th, n * tw)
    out = image.clone()
    out[:, : n * th, : n * tw] = shuffled
    return out


def cells_to_pixels(cell_mask: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Expand a bool ``[gh, gw]`` cell mask to a ``[H, W]`` pixel mask (cell borders: :func:`cell_bounds`)."""
    gh, gw = cell_mask.shape
    h, w = size
    rows = torch.diff(torch.tensor(cell_bounds(h, gh), device=cell_mask.device))
    cols = torch.diff(torch.tensor(cell_bounds(w, gw), device=cell_mask.device))
    return cell_mask.repeat_interleave(rows, dim=0).repeat_interleave(cols, dim=1)


def drop_cells(image: torch.Tensor, cell_mask: torch.Tensor) -> torch.Tensor:
    """Set to zero the pixels of every cell where ``cell_mask [gh, gw]`` is True."""
    _check_image(image)
    pixels = cells_to_pixels(cell_mask.to(device=image.device, dtype=torch.bool), tuple(image.shape[-2:]))
    return image.masked_fill(pixels.unsqueeze(0), 0.0)


def random_cells(grid: Tuple[int, int], ratio: float, generator: torch.Generator) -> torch.Tensor:
    """A bool ``[gh, gw]`` mask with exactly ``round(ratio * gh * gw)`` True cells, chosen at random."""
    gh, gw = int(grid[0]), int(grid[1])
    k = count_for_ratio(ratio, gh * gw)
    mask = torch.zeros(gh * gw, dtype=torch.bool)
    mask[torch.randperm(gh * gw, generator=generator)[:k]] = True
    return mask.reshape(gh, gw)
