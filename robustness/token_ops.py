"""Token-level ops on one image's visual tokens ``[N, D]`` after the projector (row-major grid)."""

from __future__ import annotations

from typing import List, Optional, Tuple

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


def view_grids(views: torch.Tensor, grid: Tuple[int, int]) -> List[torch.Tensor]:
    """Each view's tokens as the rectangle they form, in view order: long ``[h_v, w_v]`` row indices.

    ``views`` (long ``[N]``, tiled input: 0 = base view, k = tile k, -1 = a row-end token) is all this
    needs: the row-end tokens cut the packed sequence into lines, and a view's tokens on one line are one
    contiguous run. The base view holds no row ends: its ``gh * gw`` tokens are the tower's ``grid``,
    row-major. A tile keeps, after unpadding, a ``h_v x w_v`` rectangle of its grid (one run of ``w_v``
    tokens on each of ``h_v`` lines); OneVision's pooled grid is one view, a rectangle of its own size.
    """
    views = views.reshape(-1).to(device="cpu", dtype=torch.long)
    line = torch.cumsum((views < 0).long(), 0)  # tokens before the first row end are line 0
    out = []
    for view in torch.unique(views[views >= 0]).tolist():
        rows = torch.nonzero(views == view, as_tuple=False).reshape(-1)
        lines, counts = torch.unique(line[rows], return_counts=True)
        gh, gw = int(grid[0]), int(grid[1])
        same_line = line[rows][1:] == line[rows][:-1]
        ok = bool((torch.diff(rows)[same_line] == 1).all())  # one contiguous run per line
        if len(lines) == 1 and rows.numel() == gh * gw:  # the base view (or a view laid out as one square grid)
            shape = (gh, gw)
        else:
            shape = (len(lines), int(counts[0]))
            ok = ok and bool((counts == shape[1]).all())
        if not ok:
            raise ValueError(f"view {view}'s tokens do not form a rectangle (lines of {counts.tolist()} tokens)")
        out.append(rows.reshape(shape))
    return out


def split_bounds(length: int, blocks: int) -> List[int]:
    """:func:`~lmms_ac.robustness.grid.block_bounds` (near-equal, larger blocks first, as numpy.array_split),
    allowing more blocks than rows: the last blocks are then empty (a tile cut to fewer rows than ``m``)."""
    if blocks < 1:
        raise ValueError(f"cannot split into {blocks} groups")
    base, extra = divmod(int(length), int(blocks))
    bounds = [0]
    for b in range(blocks):
        bounds.append(bounds[-1] + base + (1 if b < extra else 0))
    return bounds


def view_group_rows(views: torch.Tensor, grid: Tuple[int, int], m: int, group: int) -> torch.Tensor:
    """Row indices (ascending) of group ``group`` of the ``m x m`` split of EACH view's rectangle
    (:func:`view_grids`), every view together: the token-group probe on tiled input. On one view of the
    tower's grid these are :func:`~lmms_ac.robustness.grid.group_indices`."""
    if not 0 <= group < m * m:
        raise ValueError(f"group must be in 0..{m * m - 1} for a {m}x{m} split, got {group}")
    bi, bj = divmod(group, m)
    picked = []
    for rect in view_grids(views, grid):
        rows, cols = split_bounds(rect.shape[0], m), split_bounds(rect.shape[1], m)
        picked.append(rect[rows[bi] : rows[bi + 1], cols[bj] : cols[bj + 1]].reshape(-1))
    return torch.sort(torch.cat(picked)).values if picked else torch.zeros(0, dtype=torch.long)


def keep_group(
    tokens: torch.Tensor,
    grid: Tuple[int, int],
    m: int,
    group: int,
    patch_mask: Optional[torch.Tensor] = None,
    views: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Only the tokens of group ``group`` of an ``m x m`` split of the grid, in row-major order. On tiled
    input (``views``) group ``group`` of every view (:func:`view_group_rows`) and the row-end tokens, in
    their order."""
    if views is not None:
        views = views.reshape(-1).to(device="cpu", dtype=torch.long)
        keep = torch.zeros(tokens.shape[0], dtype=torch.bool)
        keep[view_group_rows(views, grid, m, group)] = True
        keep |= views < 0
        return tokens[torch.nonzero(keep, as_tuple=False).reshape(-1).to(tokens.device)]
    rows = patch_rows(tokens.shape[0], grid, patch_mask)[group_indices(grid, m, group)]
    return tokens[rows.to(tokens.device)]


def noise_group(
    tokens: torch.Tensor,
    grid: Tuple[int, int],
    m: int,
    group: int,
    generator: torch.Generator,
    patch_mask: Optional[torch.Tensor] = None,
    views: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Add scaled uniform noise (:mod:`lmms_ac.robustness.noise`) to one group's tokens only. On tiled
    input (``views``) the component is group ``group`` of every view together (:func:`view_group_rows`):
    one scale, one draw; row-end tokens untouched."""
    if views is not None:
        return add_component_noise(tokens, view_group_rows(views, grid, m, group), generator)
    rows = patch_rows(tokens.shape[0], grid, patch_mask)[group_indices(grid, m, group)]
    return add_component_noise(tokens, rows, generator)
