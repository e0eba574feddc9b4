"""Training orders that read nothing but (A, C): region-based sampling, random, rank-by-A.

Region-based sampling (docs/METHODS.md#region-sampling), as written there:
- the plane is the min-max normalised (A, C) square of all k candidates; at level j = 1, 2, ... it is
  split into 2^j x 2^j equal cells (a point on the upper edge belongs to the last cell);
- empty cells and cells holding an already-sampled setting are dropped; the remaining cells are
  visited in random order, one random setting drawn from each; when a level's cells are used up the
  next level starts. (Settings with identical (A, C) are never separated; after ``MAX_LEVEL`` levels
  the remaining ones are taken in random order.)

Every function returns orders of shape (runs, k): row r is the order in which run r trains the k settings.
"""

from __future__ import annotations

import zlib
from typing import List, Optional, Tuple

import numpy as np

from lmms_ac.law.linalg import poly_features

MAX_LEVEL = 40


def seed_sequence(*parts: object) -> List[int]:
    """A numpy seed from ints and names (names hashed with crc32, stable across runs and machines)."""
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


def normalize_plane(A: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(k, 2) min-max normalised (A, C) over all candidates (a constant axis maps to 0)."""
    pts = np.stack([np.asarray(A, float), np.asarray(C, float)], axis=-1)
    lo, hi = pts.min(0), pts.max(0)
    return (pts - lo) / np.where(hi > lo, hi - lo, 1.0)


def law_features(points: np.ndarray) -> np.ndarray:
    """Degree-2 features (A, C, A², AC, C²) of normalised points (the intercept is fitted apart)."""
    return poly_features(points, 2)


def cell_ids(points: np.ndarray, level: int) -> np.ndarray:
    """Cell index of each normalised point on the 2^level x 2^level grid (upper edge -> last cell)."""
    n = 2**level
    ij = np.clip(np.floor(points * n).astype(np.int64), 0, n - 1)
    return ij[:, 0] * n + ij[:, 1]


def region_orders(points: np.ndarray, runs: int, rng: np.random.Generator) -> np.ndarray:
    """Training orders (runs, k) of region-based sampling, all runs advanced together level by level."""
    k = points.shape[0]
    orders = np.full((runs, k), -1, dtype=np.int64)
    sampled = np.zeros((runs, k), dtype=bool)
    pos = np.zeros(runs, dtype=np.int64)
    for level in range(1, MAX_LEVEL + 1):
        if (pos == k).all():
            break
        cells, inv = np.unique(cell_ids(points, level), return_inverse=True)
        m = len(cells)
        member = np.zeros((k, m), dtype=np.int64)
        member[np.arange(k), inv] = 1
        eligible = (sampled.astype(np.int64) @ member) == 0  # non-empty cells holding no sampled setting
        keys = np.where(eligible, rng.random((runs, m)), 2.0)
        cell_order = np.argsort(keys, axis=1)
        n_eligible = eligible.sum(axis=1)
        # one random setting per cell: sort points by (cell, random key); take each cell's first
        by_cell = np.argsort(inv[None, :] + rng.random((runs, k)), axis=1)
        first = np.searchsorted(np.sort(inv), np.arange(m))
        seq = np.take_along_axis(by_cell[:, first], cell_order, axis=1)
        for i in range(m):
            rows = np.flatnonzero(i < n_eligible)
            if rows.size == 0:
                break
            pts = seq[rows, i]
            orders[rows, pos[rows]] = pts
            sampled[rows, pts] = True
            pos[rows] += 1
    for r in np.flatnonzero(pos < k):  # identical points that no level separates
        rest = rng.permutation(np.flatnonzero(~sampled[r]))
        orders[r, pos[r] :] = rest
    return orders


def random_orders(k: int, runs: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random training orders (runs, k)."""
    return np.argsort(rng.random((runs, k)), axis=1)


def a_orders(A: np.ndarray, runs: int, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """Highest A first (ties broken at random per run when ``rng`` is given, else by index)."""
    A = np.asarray(A, float)
    jitter = rng.random((runs, len(A))) if rng is not None else np.zeros((runs, len(A)))
    return np.lexsort((jitter, np.broadcast_to(-A, (runs, len(A)))), axis=1)


def region_next(points: np.ndarray, trained: np.ndarray) -> Tuple[Optional[int], List[List[int]]]:
    """The current region level and its eligible cells (lists of candidate indices) given ``trained``."""
    if trained.all():
        return None, []
    for level in range(1, MAX_LEVEL + 1):
        cells = cell_ids(points, level)
        options = [list(np.flatnonzero(cells == c)) for c in np.unique(cells) if not trained[cells == c].any()]
        if options:
            return level, options
    return MAX_LEVEL, [list(np.flatnonzero(~trained))]
