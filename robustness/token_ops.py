"""Token-level ops on one image's visual tokens ``[N, D]`` after the projector (row-major grid)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .grid import group_indices, non_identity_permutation
from .noise import add_component_noise


def patch_rows(n: int, grid: Tuple[int, int], patch_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Row indices of the ``gh * gw`` patch tokens among ``n`` rows, in row-major grid order.

    Without ``patch_mask`` every row is a patch token (``n`` must equal ``gh * gw``); with it
    (bool ``[n]``, False at newline/separator tokens) the True rows are the patch tokens.
    """
    expected = int(grid[0]) * int(grid[1])
    if patch_mask is None:
        if n != expected:
            raise ValueError(
                f"{n} visual tokens but grid {tuple(grid)} has {expected}; pass a patch mask "
                "(context.visual_mask) marking the patch tokens"
            )
        return torch.arange(n)
    patch_mask = patch_mask.reshape(-1).to(device="cpu", dtype=torch.bool)
    if patch_mask.numel() != n or int(patch_mask.sum()) != expected:
        raise ValueError(
            f"patch mask marks {int(patch_mask.sum())} of {patch_mask.numel()} rows; expected {expected} of {n}"
        )
    return torch.nonzero(patch_mask, as_tuple=False).reshape(-1)


def permute_tokens(
    tokens: torch.Tensor, generator: torch.Generator, keep: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Randomly permute the rows of ``tokens [N, D]``; rows where ``keep`` (bool ``[N]``) is True stay.

    The permutation of the movable rows is never the identity when two or more rows can move.
    """
    n = tokens.shape[0]
    if keep is None:
        movable = torch.arange(n)
    else:
        keep = keep.reshape(-1).to(device="cpu", dtype=torch.bool)
        if keep.numel() != n:
            raise ValueError(f"keep mask has {keep.numel()} entries for {n} tokens")
        movable = torch.nonzero(~keep, as_tuple=False).reshape(-1)
    order = torch.arange(n)
    order[movable] = movable[non_identity_permutation(movable.numel(), generator)]
    return tokens[order.to(tokens.device)]


def permute_within_views(tokens: torch.Tensor, generator: torch.Generator, views: torch.Tensor) -> torch.Tensor:
    """Permute the rows of ``tokens [N, D]`` within each view (``views`` long ``[N]``: 0 = base view,
    k = tile k; -1 rows stay in place). One permutation per view, drawn from ``generator`` in view
    order (base view first, so it gets the draw a single-grid image of that size gets); none is the identity."""
    views = views.reshape(-1).to(device="cpu", dtype=torch.long)
    n = tokens.shape[0]
    if views.numel() != n:
        raise ValueError(f"views has {views.numel()} entries for {n} tokens")
    order = torch.arange(n)
    for view in torch.unique(views[views >= 0]).tolist():  # sorted: base view, then tile 1, 2, ...
        rows = torch.nonzero(views == view, as_tuple=False).reshape(-1)
        order[rows] = rows[non_identity_permutation(rows.numel(), generator)]
    return tokens[order.to(tokens.device)]


def permute_visual_tokens(
    tokens: torch.Tensor,
    generator: torch.Generator,
    visual_mask: Optional[torch.Tensor] = None,
    views: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Token permutation: within each view on tiled input (``views``, see :func:`permute_within_views`),
    else every row where ``visual_mask`` is True (every row without a mask) among themselves."""
    if views is not None:
        return permute_within_views(tokens, generator, views)
    keep = None if visual_mask is None else ~visual_mask.to(torch.bool)
    return permute_tokens(tokens, generator, keep)


def permute_across_views(
    tokens: torch.Tensor,
    generator: torch.Generator,
    visual_mask: Optional[torch.Tensor] = None,
    views: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Global token permutation: one permutation of every patch token of the image together, across the
    base view and all tiles on tiled input (``views`` >= 0; -1 rows, the row-end tokens, stay in place).
    Without ``views`` it is :func:`permute_visual_tokens` (one view: the same draw, the same result)."""
    if views is None:
        return permute_visual_tokens(tokens, generator, visual_mask)
    views = views.reshape(-1).to(device="cpu", dtype=torch.long)
    if views.numel() != tokens.shape[0]:
        raise ValueError(f"views has {views.numel()} entries for {tokens.shape[0]} tokens")
    return permute_tokens(tokens, generator, views < 0)


def keep_group(
    tokens: torch.Tensor, grid: Tuple[int, int], m: int, group: int, patch_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Only the tokens of group ``group`` of an ``m x m`` split of the grid, in row-major order."""
    rows = patch_rows(tokens.shape[0], grid, patch_mask)[group_indices(grid, m, group)]
    return tokens[rows.to(tokens.device)]


def noise_group(
    tokens: torch.Tensor,
    grid: Tuple[int, int],
    m: int,
    group: int,
    generator: torch.Generator,
    patch_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Add scaled uniform noise (:mod:`lmms_ac.robustness.noise`) to one group's tokens only."""
    rows = patch_rows(tokens.shape[0], grid, patch_mask)[group_indices(grid, m, group)]
    return add_component_noise(tokens, rows, generator)
