"""The AC policy: which representations to fully train, simulated on settings with known scores.

Region-based sampling (METHODS.md section 5, the default), as written there:
- the plane is the min-max normalised (A, C) square of all k candidates; at level j = 1, 2, ... it is
  split into 2^j x 2^j equal cells (a point on the upper edge belongs to the last cell);
- empty cells and cells holding an already-sampled setting are dropped; the remaining cells are
  visited in random order, one random setting drawn from each; when a level's cells are used up the
  next level starts. (Settings with identical (A, C) are never separated; after ``MAX_LEVEL`` levels
  the remaining ones are taken in random order.)
- after each new sample from the second on, the degree-2 law is fitted on the sampled settings
  (minimum-norm least squares while underdetermined, intercept unpenalised: ``linalg.min_norm_fit``)
  and ALL k settings are ranked by prediction;
- success at budget k': the true best setting is in the predicted top 3 at some step <= k'
  (Recall@3; Recall@1 with the top 1); with one sample, success only if that sample is the best.
  Ties in predictions count against the best setting.

``random`` is the baseline: settings are trained in random order and success at k' means the best
one was trained (the same for every top-n).

``ucb`` (beyond the paper): the first ``UCB_WARMUP`` = 4 settings come from region-based sampling
(the same random draws as ``region``, so the two curves coincide up to k' = 4); afterwards the next
setting is the untrained one with the highest upper confidence bound mean + beta * std of a Bayesian
degree-2 law (ridge posterior on the centred features with prior precision ``lam``, scores
standardised on the trained settings; beta = 2, lam = 0.1, chosen on synthetic random quadratic laws
with noise, not on the bundled data). Success is measured exactly like ``region`` (same law fit, same
ranking), so the two differ only in which settings get trained.

Every policy yields per-run training orders; ``recall_from_orders`` scores any orders. The law fit
depends only on the *set* of trained settings, so each distinct set is fitted once (batched SVD).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from loguru import logger

from lmms_ac.law.data import BenchmarkData
from lmms_ac.law.linalg import min_norm_fit, poly_features

POLICIES = ("region", "ucb", "random")
MAX_LEVEL = 40
DEFAULT_TOPS = (1, 3)
UCB_WARMUP = 4
UCB_BETA = 2.0
UCB_LAMBDA = 0.1


def _seed(*parts: object) -> List[int]:
    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


def normalize_plane(A: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(k, 2) min-max normalised (A, C) over all candidates (a constant axis maps to 0)."""
    pts = np.stack([np.asarray(A, float), np.asarray(C, float)], axis=-1)
    lo, hi = pts.min(0), pts.max(0)
    return (pts - lo) / np.where(hi > lo, hi - lo, 1.0)


def cell_ids(points: np.ndarray, level: int) -> np.ndarray:
    """Cell index of each normalised point on the 2^level x 2^level grid (upper edge -> last cell)."""
    n = 2 ** level
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
        orders[r, pos[r]:] = rest
    return orders


def random_orders(k: int, runs: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random training orders (runs, k)."""
    return np.argsort(rng.random((runs, k)), axis=1)


def _law_features(points: np.ndarray) -> np.ndarray:
    return poly_features(points, 2)


def _ucb_scores(X: np.ndarray, y: np.ndarray, idx: np.ndarray, beta: float, lam: float) -> np.ndarray:
    """mean + beta * std of the ridge-posterior degree-2 law given trained settings ``idx`` (..., t).

    X (k, q) features of all candidates, y (k,) scores (only trained entries are read) -> (..., k).
    """
    idx = np.asarray(idx)
    Xs, ys = X[idx], y[idx]  # (..., t, q), (..., t)
    t = idx.shape[-1]
    sd = ys.std(axis=-1, keepdims=True)
    sd = np.where((sd > 0) & (t > 1), sd, 1.0)
    xm = Xs.mean(axis=-2, keepdims=True)
    Xc = Xs - xm
    cov = np.linalg.inv(np.swapaxes(Xc, -1, -2) @ Xc + lam * np.eye(X.shape[1]))  # (..., q, q)
    w = np.einsum("...ij,...tj,...t->...i", cov, Xc, (ys - ys.mean(axis=-1, keepdims=True)) / sd)
    D = X - xm  # (..., k, q)
    mean = np.einsum("...kq,...q->...k", D, w)
    std = np.sqrt(1.0 / t + np.einsum("...ki,...ij,...kj->...k", D, cov, D))
    return mean + beta * std


def _unique_rows(member: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a boolean (R, k) matrix: (index of a representative per row group, inverse)."""
    _, first, inverse = np.unique(np.packbits(member, axis=1), axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def ucb_orders(points: np.ndarray, y: np.ndarray, runs: int, rng: np.random.Generator, beta: float = UCB_BETA,
               lam: float = UCB_LAMBDA, warmup: int = UCB_WARMUP) -> np.ndarray:
    """UCB orders: region-based sampling for ``warmup`` settings, then the UCB choice at each step.

    The choice depends only on the set trained so far, so each distinct set is scored once per step.
    """
    k = len(y)
    X = _law_features(points)
    orders = region_orders(points, runs, rng)
    member = np.zeros((runs, k), dtype=bool)
    start = max(1, min(warmup, k))
    np.put_along_axis(member, orders[:, :start], True, axis=1)
    for t in range(start, k):
        first, inverse = _unique_rows(member)
        sets = member[first]  # (G, k), t trained each
        score = _ucb_scores(X, y, np.nonzero(sets)[1].reshape(len(first), t), beta, lam)
        score[sets] = -np.inf
        orders[:, t] = np.argmax(score, axis=1)[inverse]
        member[np.arange(runs), orders[:, t]] = True
    return orders


def _step_sets(orders: np.ndarray, t: int) -> Tuple[np.ndarray, np.ndarray]:
    """Distinct sets {orders[r, :t+1]} as sorted index rows (G, t+1) and each run's set id (R,)."""
    k = orders.shape[1]
    if k <= 62:
        keys = np.bitwise_or.reduce(np.left_shift(np.int64(1), orders[:, : t + 1]), axis=1)
        uniq, inverse = np.unique(keys, return_inverse=True)
        members = ((uniq[:, None] >> np.arange(k)) & 1).astype(bool)
    else:
        member = np.zeros(orders.shape, dtype=bool)
        np.put_along_axis(member, orders[:, : t + 1], True, axis=1)
        _, first, inverse = np.unique(np.packbits(member, axis=1), axis=0, return_index=True, return_inverse=True)
        members = member[first]
    idx = np.nonzero(members)[1].reshape(len(members), t + 1)
    return idx, inverse.reshape(-1)


def law_hits(orders: np.ndarray, points: np.ndarray, y: np.ndarray, best: int,
             tops: Sequence[int] = DEFAULT_TOPS) -> np.ndarray:
    """hits[r, s, i]: at step s+1 of run r the best setting is in the law's predicted top ``tops[i]``.

    Step 1 (one sample) is a hit only when that sample is the best.
    """
    runs, k = orders.shape
    X = _law_features(points)
    hits = np.zeros((runs, k, len(tops)), dtype=bool)
    hits[:, 0, :] = (orders[:, 0] == best)[:, None]
    tops_arr = np.asarray(tops)
    for t in range(1, k):
        idx, inverse = _step_sets(orders, t)
        b, w = min_norm_fit(X[idx], y[idx])  # (G,), (G, q)
        pred = w @ X.T + b[:, None]  # (G, k)
        ahead = (pred >= pred[:, best:best + 1]).sum(axis=1) - 1  # ties count against the best
        hits[:, t, :] = (ahead[:, None] < tops_arr[None, :])[inverse]
    return hits


def recall_from_orders(orders: np.ndarray, points: np.ndarray, y: np.ndarray, best: int,
                       tops: Sequence[int] = DEFAULT_TOPS, law: bool = True) -> Dict[int, np.ndarray]:
    """Recall@top against budget k' = 1..k for the given orders.

    ``law=True`` scores with the law ranking (region/ucb); ``law=False`` is the random baseline's
    criterion (the best setting was trained).
    """
    if law:
        hits = law_hits(orders, points, y, best, tops)
        success = np.logical_or.accumulate(hits, axis=1)
        return {top: success[:, :, i].mean(axis=0) for i, top in enumerate(tops)}
    trained_best = np.logical_or.accumulate(orders == best, axis=1).mean(axis=0)
    return {top: trained_best.copy() for top in tops}


@dataclass
class PolicyCurve:
    """Recall@top against budget k' (index 0 is k' = 1) for one benchmark and policy."""

    benchmark: str
    policy: str
    settings: Tuple[str, ...]
    best: str
    runs: int
    recall: Dict[int, np.ndarray]

    @property
    def k(self) -> int:
        return len(self.settings)


@dataclass
class PolicyReport:
    curves: List[PolicyCurve]
    options: Dict[str, object] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Long frame: benchmark, policy, budget, k, recall@<top>... (plus a 'mean' benchmark)."""
        rows = []
        for c in self.curves:
            for i in range(c.k):
                rows.append({"benchmark": c.benchmark, "policy": c.policy, "budget": i + 1, "k": c.k,
                             **{f"recall@{top}": float(v[i]) for top, v in c.recall.items()}})
        df = pd.DataFrame(rows)
        if df.empty:
            return df
        rec = [col for col in df.columns if col.startswith("recall@")]
        mean = df.groupby(["policy", "budget"], as_index=False)[rec].mean()
        mean.insert(0, "benchmark", "mean")
        mean["k"] = df.groupby(["policy", "budget"])["k"].max().to_numpy()
        return pd.concat([df, mean[df.columns]], ignore_index=True)

    def at(self, budget: int, top: int = 3, policy: str = "region", benchmark: str = "mean") -> float:
        df = self.to_frame()
        sel = df[(df.benchmark == benchmark) & (df.policy == policy) & (df.budget == budget)]
        if sel.empty:
            raise KeyError(f"no recall for benchmark={benchmark} policy={policy} budget={budget}")
        return float(sel[f"recall@{top}"].iloc[0])

    def to_dict(self) -> Dict[str, object]:
        out: Dict[str, object] = {"options": self.options, "benchmarks": {}}
        for c in self.curves:
            b = out["benchmarks"].setdefault(c.benchmark, {"k": c.k, "best": c.best, "policies": {}})
            b["policies"][c.policy] = {f"recall@{top}": [float(x) for x in v] for top, v in c.recall.items()}
        df = self.to_frame()
        mean = df[df.benchmark == "mean"]
        out["mean"] = {p: {col: g[col].tolist() for col in g.columns if col.startswith("recall@")}
                       for p, g in mean.groupby("policy")}
        return out


def _prepare(data: BenchmarkData) -> Tuple[Tuple[str, ...], np.ndarray, np.ndarray, int]:
    mask = data.scored
    if not mask.all():
        dropped = [s for s, m in zip(data.settings, mask) if not m]
        logger.warning(f"{data.benchmark}: settings without a score cannot be simulated and are left out: "
                       f"{', '.join(dropped)}")
    settings = tuple(s for s, m in zip(data.settings, mask) if m)
    if len(settings) < 2:
        raise ValueError(f"benchmark {data.benchmark!r} has {len(settings)} scored setting(s); the policy "
                         f"simulation needs at least 2")
    y = data.score[mask]
    best = int(np.argmax(y))
    if (y == y[best]).sum() > 1:
        logger.warning(f"{data.benchmark}: several settings share the best score; the first one counts as best")
    return settings, normalize_plane(data.A[mask], data.C[mask]), y, best


def simulate_benchmark(data: BenchmarkData, policies: Sequence[str] = ("region", "random"), runs: int = 1000,
                       seed: int = 0, tops: Sequence[int] = DEFAULT_TOPS, ucb_beta: float = UCB_BETA,
                       ucb_lambda: float = UCB_LAMBDA) -> List[PolicyCurve]:
    """Simulate ``runs`` seeded runs of each policy on one benchmark."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    settings, points, y, best = _prepare(data)
    curves = []
    for policy in policies:
        # ucb's warm-up reuses region's random draws (common random numbers for a paired comparison)
        rng = np.random.default_rng(_seed(seed, data.benchmark, "region" if policy == "ucb" else policy))
        if policy == "region":
            orders, law = region_orders(points, runs, rng), True
        elif policy == "ucb":
            orders, law = ucb_orders(points, y, runs, rng, ucb_beta, ucb_lambda), True
        elif policy == "random":
            orders, law = random_orders(len(y), runs, rng), False
        else:
            from lmms_ac.registry import UnknownEntryError

            raise UnknownEntryError("policy", policy, list(POLICIES))
        recall = recall_from_orders(orders, points, y, best, tops, law=law)
        curves.append(PolicyCurve(data.benchmark, policy, settings, settings[best], runs, recall))
    return curves


def simulate(data: Mapping[str, BenchmarkData], policies: Sequence[str] = ("region", "random"), runs: int = 1000,
             seed: int = 0, tops: Sequence[int] = DEFAULT_TOPS, ucb_beta: float = UCB_BETA,
             ucb_lambda: float = UCB_LAMBDA) -> PolicyReport:
    """Simulate every benchmark; see ``simulate_benchmark``."""
    if not data:
        raise ValueError("no benchmarks to simulate")
    curves: List[PolicyCurve] = []
    for d in data.values():
        curves += simulate_benchmark(d, policies, runs, seed, tops, ucb_beta, ucb_lambda)
    options = {"policies": list(policies), "runs": runs, "seed": seed, "tops": list(tops),
               "ucb_beta": ucb_beta, "ucb_lambda": ucb_lambda,
               "success": "best setting in the law's predicted top-n at some step <= k' (random: best trained)"}
    return PolicyReport(curves, options)


# --------------------------------------------------------------------------------------------------
# recommend: the next setting to train given what is trained so far


@dataclass
class Recommendation:
    policy: str
    next: Optional[str]
    options: List[str]
    level: Optional[int]
    ranking: pd.DataFrame
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        from lmms_ac.law.fit import _clean_json

        return _clean_json({"policy": self.policy, "next": self.next, "options": self.options, "level": self.level,
                            "notes": self.notes, "ranking": self.ranking.to_dict("records")})


def region_next(points: np.ndarray, trained: np.ndarray) -> Tuple[Optional[int], List[List[int]]]:
    """The current region level and its eligible cells (lists of candidate indices) given ``trained``."""
    if trained.all():
        return None, []
    for level in range(1, MAX_LEVEL + 1):
        cells = cell_ids(points, level)
        options = [list(np.flatnonzero(cells == c)) for c in np.unique(cells)
                   if not trained[cells == c].any()]
        if options:
            return level, options
    return MAX_LEVEL, [list(np.flatnonzero(~trained))]


def recommend(names: Sequence[str], A: np.ndarray, C: np.ndarray, trained: Mapping[str, float],
              policy: str = "region", seed: int = 0, ucb_beta: float = UCB_BETA,
              ucb_lambda: float = UCB_LAMBDA) -> Recommendation:
    """Which candidate to train next and the law's current ranking of all candidates.

    ``trained`` maps candidate names to their benchmark score. The region policy draws one cell of the
    current level and one candidate in it (seeded); ``options`` lists one group per eligible cell.
    """
    names = [str(n) for n in names]
    unknown = [t for t in trained if t not in names]
    if unknown:
        from lmms_ac.registry import UnknownEntryError

        raise UnknownEntryError("candidate", unknown[0], names)
    if policy not in ("region", "ucb"):
        raise ValueError(f"recommend supports the policies region and ucb, not {policy!r}")
    points = normalize_plane(A, C)
    k = len(names)
    tmask = np.array([n in trained for n in names])
    y = np.array([float(trained.get(n, np.nan)) for n in names])
    notes: List[str] = []
    X = _law_features(points)
    ranking = pd.DataFrame({"variant": names, "A": np.asarray(A, float), "C": np.asarray(C, float),
                            "trained": tmask, "score": y})
    idx = np.flatnonzero(tmask)
    if len(idx) >= 2:
        if len(idx) < X.shape[1] + 1:
            notes.append(f"{len(idx)} trained settings for 6 parameters: minimum-norm fit, ranking is tentative")
        b, w = min_norm_fit(X[idx], y[idx])
        ranking["predicted"] = X @ w + b
        ranking["rank"] = ranking["predicted"].rank(ascending=False, method="min").astype(int)
        ranking = ranking.sort_values("rank", kind="stable").reset_index(drop=True)
    else:
        notes.append("fewer than 2 trained settings: no law fit yet, no ranking")
        ranking["predicted"] = np.nan
        ranking["rank"] = pd.array([pd.NA] * k, dtype="Int64")
    rng = np.random.default_rng(_seed(seed, "recommend"))
    level: Optional[int] = None
    if tmask.all():
        return Recommendation(policy, None, [], None, ranking, notes + ["every candidate is trained"])
    if policy == "region" or len(idx) < UCB_WARMUP:
        level, cells = region_next(points, tmask)
        cell = cells[int(rng.integers(len(cells)))]
        nxt = names[int(cell[int(rng.integers(len(cell)))])]
        options = [" | ".join(names[i] for i in c) for c in cells]
        if policy == "ucb":
            notes.append(f"ucb warm-up: the first {UCB_WARMUP} settings are drawn like the region policy")
    else:
        score = _ucb_scores(X, np.nan_to_num(y), idx, ucb_beta, ucb_lambda)
        score[tmask] = -np.inf
        order = np.argsort(-score)
        nxt = names[int(order[0])]
        options = [names[i] for i in order if not tmask[i]]
    return Recommendation(policy, nxt, options, level, ranking, notes)
