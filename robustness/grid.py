"""Grid arithmetic shared by the ops: cell boundaries, M x M token groups, counts from ratios."""

from __future__ import annotations

import math
from typing import List, Tuple

import torch


def count_for_ratio(ratio: float, n: int) -> int:
    """``round(ratio * n)`` with halves rounded up (not Python's banker's rounding)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    return min(n, int(math.floor(ratio * n + 0.5 + 1e-9)))


def cell_bounds(length: int, cells: int) -> List[int]:
    """Pixel boundaries of ``cells`` cells along an axis of ``length`` pixels: ``i * length // cells``.

    With ``length == cells * patch_size`` (the usual ViT case) these are exactly the patch borders.
    """
    if cells < 1 or cells > length:
        raise ValueError(f"cannot cut {length} pixels into {cells} cells")
    return [i * length // cells for i in range(cells + 1)]


def block_bounds(length: int, blocks: int) -> List[int]:
    """Near-equal split of ``length`` items into ``blocks`` runs, larger runs first (numpy.array_split).

    E.g. 24 tokens into 5 blocks -> sizes 5, 5, 5, 5, 4.
    """
    if blocks < 1 or blocks > length:
        raise ValueError(f"cannot split {length} rows/columns into {blocks} groups")
    base, extra = divmod(length, blocks)
    bounds = [0]
    for b in range(blocks):
        bounds.append(bounds[-1] + base + (1 if b < extra else 0))
    return bounds


def group_indices(grid: Tuple[int, int], m: int, group: int) -> torch.Tensor:
    """Row-major token indices of group ``group`` (0..m*m-1, row-major over blocks) of an m x m split.

    The ``gh x gw`` grid is split into ``m`` near-equal row blocks and ``m`` near-equal column blocks
    (see :func:`block_bounds`); the indices come in row-major order of the original grid.
    """
    gh, gw = int(grid[0]), int(grid[1])
    if not 0 <= group < m * m:
        raise ValueError(f"group must be in 0..{m * m - 1} for a {m}x{m} split, got {group}")
    rows, cols = block_bounds(gh, m), block_bounds(gw, m)
    bi, bj = divmod(group, m)
    r = torch.arange(rows[bi], rows[bi + 1])
    c = torch.arange(cols[bj], cols[bj + 1])
    return (r[:, None] * gw + c[None, :]).reshape(-1)


def non_identity_permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """``randperm(n)`` that is never the identity when ``n >= 2`` (an identity draw is rolled by one)."""
    perm = torch.randperm(n, generator=generator)
    if n >= 2 and bool((perm == torch.arange(n)).all()):
        perm = torch.roll(perm, 1)
    return perm
