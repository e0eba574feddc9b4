"""The AC policy: which representations to fully train, simulated on settings with known scores.

Region-based sampling (docs/METHODS.md#region-sampling, the default), as written there:
- the plane is the min-max normalised (A, C) square of all k candidates; at level j = 1, 2, ... it is
  split into 2^j x 2^j equal cells (a point on the upper edge belongs to the last cell);
- empty cells and cells holding an already-sampled setting are dropped; the remaining cells are
  visited in random order, one random setting drawn from each; when a level's cells are used up the
  next level starts. (Settings with identical (A, C) are never separated; after ``MAX_LEVEL`` levels
  the remaining ones are taken in random order.)
- after each new sample from the second on, the degree-2 law is fitted on the sampled settings
  (minimum-norm least squares while underdetermined, intercept unpenalised: ``linalg.min_norm_fit``)
  and the settings are ranked.

Ranking (``ranking``): ``measured`` (default) ranks trained settings by their measured score and
untrained ones by prediction, so a hit means the best setting was trained or is among the top-n
untrained by prediction; ``law`` ranks all k by the law's prediction, trained ones too (the paper's
simulation, where a prediction can outrank a measurement). Ties in predictions count against the best.

Metrics, both reported: anytime Recall@n at k' (a hit at some step <= k'; with one sample a hit only
if the sample is the best) and final Recall@n at k' (a hit after exactly k' trainings: the paper's
Algorithm 3). On the bundled data with ``ranking="law"``: 0.85 anytime vs 0.68 final at k' = 4.

Policies live in one registry (``lmms_ac.law.policies``):
- ``region``: above. ``random``: settings in random order; success at k' means the best was trained.
- ``ucb`` (beyond the paper): the first ``UCB_WARMUP`` = 4 settings come from region sampling (the same
  random draws as ``region``), then the untrained setting with the highest mean + beta * std of a
  Bayesian degree-2 law (ridge posterior on the centred features with prior precision ``lam``, scores
  standardised on the trained settings; beta = 2, lam = 0.1, chosen on synthetic random quadratic laws
  with noise, not on the bundled data); ranks like ``region``.
- ``prior`` (beyond the paper, ``lmms_ac.law.prior``): the law fitted on other benchmarks as a prior,
  Bayesian updating on the target, expected improvement; ranks by the posterior mean. ``simulate``
  evaluates it leave-benchmark-out.

Every policy yields per-run training orders; the law fit depends only on the *set* of trained
settings, so each distinct set is fitted once (batched SVD).
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
from lmms_ac.law.options import RANKINGS
from lmms_ac.law.prior import LawPrior, law_prior, prior_orders, prior_predictions
from lmms_ac.law.policies import POLICY_REGISTRY, UCB_WARMUP, PolicySpec, policy_names  # noqa: F401 (re-exported)

N_LAW_PARAMS = 6
RANKING_HELP = {  # one entry per RANKINGS name
    "measured": "trained settings rank by their measured score, untrained ones by prediction: a hit means the "
    "best setting was trained or is among the top-n untrained settings by prediction",
    "law": "every setting ranks by the law's prediction, trained ones too (the paper's simulation)",
}
METRICS = ("anytime", "final")
METRIC_HELP = {
    "anytime": "anytime Recall@n at k': the best setting was in the top-n of the ranking after some step <= k'",
    "final": "final Recall@n at k': the best setting is in the top-n of the ranking after exactly k' trainings "
    "(the paper's Algorithm 3)",
}
MAX_LEVEL = 40
DEFAULT_TOPS = (1, 3)
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


def ucb_orders(
    points: np.ndarray,
    y: np.ndarray,
    runs: int,
    rng: np.random.Generator,
    beta: float = UCB_BETA,
    lam: float = UCB_LAMBDA,
    warmup: int = UCB_WARMUP,
) -> np.ndarray:
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


def _law_predict_sets(points: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The degree-2 law fitted on each row of trained sets ``idx`` (G, t), predicted for all k: (G, k)."""
    X = _law_features(points)
    b, w = min_norm_fit(X[idx], y[idx])  # (G,), (G, q)
    return w @ X.T + b[:, None]


def hits_from_predictions(
    orders: np.ndarray,
    y: np.ndarray,
    best: int,
    predict_sets,
    tops: Sequence[int] = DEFAULT_TOPS,
    ranking: str = "measured",
) -> np.ndarray:
    """hits[r, s, i]: after step s+1 of run r the ranking has the best setting in its top ``tops[i]``.

    ``predict_sets(idx)`` maps trained sets (G, t) to predictions (G, k). ``ranking="measured"``:
    trained settings count by their measured score, so a hit means the best setting was trained or is
    among the ``top`` untrained settings with the highest prediction. ``ranking="law"`` (the paper's):
    all k settings rank by prediction. Step 1 (one sample) is a hit only when that sample is the best.
    Ties in predictions count against the best setting.
    """
    if ranking not in RANKINGS:
        from lmms_ac.registry import UnknownEntryError

        raise UnknownEntryError("ranking", ranking, list(RANKINGS))
    runs, k = orders.shape
    hits = np.zeros((runs, k, len(tops)), dtype=bool)
    hits[:, 0, :] = (orders[:, 0] == best)[:, None]
    tops_arr = np.asarray(tops)
    for t in range(1, k):
        idx, inverse = _step_sets(orders, t)
        pred = predict_sets(idx)  # (G, k)
        ahead_mask = pred >= pred[:, best : best + 1]
        if ranking == "measured":
            trained = np.zeros(pred.shape, dtype=bool)
            np.put_along_axis(trained, idx, True, axis=1)
            ahead = (ahead_mask & ~trained).sum(axis=1) - 1
            hit = trained[:, best : best + 1] | (ahead[:, None] < tops_arr[None, :])
        else:
            ahead = ahead_mask.sum(axis=1) - 1  # ties count against the best
            hit = ahead[:, None] < tops_arr[None, :]
        hits[:, t, :] = hit[inverse]
    return hits


def law_hits(
    orders: np.ndarray,
    points: np.ndarray,
    y: np.ndarray,
    best: int,
    tops: Sequence[int] = DEFAULT_TOPS,
    ranking: str = "law",
) -> np.ndarray:
    """hits[r, s, i] of the degree-2 law's ranking (see ``hits_from_predictions``).

    The default ``ranking="law"`` ranks all k settings by the law's prediction, as the paper does.
    """
    return hits_from_predictions(orders, y, best, lambda idx: _law_predict_sets(points, y, idx), tops, ranking)


def recall_metrics(hits: np.ndarray, tops: Sequence[int] = DEFAULT_TOPS) -> Dict[str, Dict[int, np.ndarray]]:
    """``{"anytime": {top: curve}, "final": {top: curve}}`` from hits (runs, k, len(tops)).

    anytime Recall@n at k': a hit at some step <= k'; final Recall@n at k': a hit after exactly k'
    trainings (the paper's Algorithm 3 ranks once, after the budget is spent).
    """
    anytime = np.logical_or.accumulate(hits, axis=1)
    return {
        "anytime": {top: anytime[:, :, i].mean(axis=0) for i, top in enumerate(tops)},
        "final": {top: hits[:, :, i].mean(axis=0) for i, top in enumerate(tops)},
    }


def recall_from_orders(
    orders: np.ndarray,
    points: np.ndarray,
    y: np.ndarray,
    best: int,
    tops: Sequence[int] = DEFAULT_TOPS,
    law: bool = True,
    ranking: str = "law",
    metric: str = "anytime",
) -> Dict[int, np.ndarray]:
    """Recall@top against budget k' = 1..k for the given orders (``metric``: anytime or final).

    ``law=True`` scores with the law ranking (region/ucb); ``law=False`` is the random baseline's
    criterion (the best setting was trained; anytime and final agree).
    """
    if not law:
        trained_best = np.logical_or.accumulate(orders == best, axis=1).mean(axis=0)
        return {top: trained_best.copy() for top in tops}
    return recall_metrics(law_hits(orders, points, y, best, tops, ranking), tops)[metric]


# --------------------------------------------------------------------------------------------------
# the policy registry: how each policy orders the trainings and what ranks the settings


@dataclass
class _Context:
    benchmark: str
    points: np.ndarray
    y: np.ndarray
    runs: int
    rng: np.random.Generator
    ucb_beta: float = UCB_BETA
    ucb_lambda: float = UCB_LAMBDA
    prior: Optional[LawPrior] = None
    acquisition: str = "ei"


def _need_prior(ctx: _Context) -> LawPrior:
    if ctx.prior is None:
        raise ValueError(
            f"policy 'prior' on {ctx.benchmark}: no prior law; simulate it together with other "
            f"benchmarks (the prior is fitted on them) or pass prior=law_prior(...)"
        )
    return ctx.prior


# implementations named by the registry in lmms_ac.law.policies
def _orders_region(c: _Context) -> np.ndarray:
    return region_orders(c.points, c.runs, c.rng)


def _orders_ucb(c: _Context) -> np.ndarray:
    return ucb_orders(c.points, c.y, c.runs, c.rng, c.ucb_beta, c.ucb_lambda)


def _orders_prior(c: _Context) -> np.ndarray:
    return prior_orders(c.points, c.y, _need_prior(c), c.runs, c.rng, c.acquisition)


def _orders_random(c: _Context) -> np.ndarray:
    return random_orders(len(c.y), c.runs, c.rng)


def _predict_law(c: _Context, idx: np.ndarray) -> np.ndarray:
    return _law_predict_sets(c.points, c.y, idx)


def _predict_prior(c: _Context, idx: np.ndarray) -> np.ndarray:
    return prior_predictions(c.points, c.y, _need_prior(c), idx)


POLICIES = tuple(policy_names())  # registration order: region, ucb, prior, random


@dataclass
class PolicyCurve:
    """Recall@top against budget k' (index 0 is k' = 1) for one benchmark and policy.

    ``recall`` is the anytime metric (kept under this name), ``final`` the paper's Algorithm 3.
    """

    benchmark: str
    policy: str
    settings: Tuple[str, ...]
    best: str
    runs: int
    recall: Dict[int, np.ndarray]
    final: Dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.settings)

    @property
    def anytime(self) -> Dict[int, np.ndarray]:
        return self.recall

    def metric(self, name: str) -> Dict[int, np.ndarray]:
        if name not in METRICS:
            from lmms_ac.registry import UnknownEntryError

            raise UnknownEntryError("recall metric", name, list(METRICS))
        return self.recall if name == "anytime" else self.final


@dataclass
class PolicyReport:
    curves: List[PolicyCurve]
    options: Dict[str, object] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Long frame: benchmark, policy, budget, k, anytime_recall@<n>, final_recall@<n>, and
        recall@<n> (= anytime, the older name), plus a 'mean' benchmark."""
        rows = []
        for c in self.curves:
            for i in range(c.k):
                row = {"benchmark": c.benchmark, "policy": c.policy, "budget": i + 1, "k": c.k}
                for top, v in c.recall.items():
                    row[f"anytime_recall@{top}"] = float(v[i])
                for top, v in (c.final or c.recall).items():
                    row[f"final_recall@{top}"] = float(v[i])
                for top, v in c.recall.items():
                    row[f"recall@{top}"] = float(v[i])
                rows.append(row)
        df = pd.DataFrame(rows)
        if df.empty:
            return df
        rec = [col for col in df.columns if "recall@" in col]
        mean = df.groupby(["policy", "budget"], as_index=False, sort=False)[rec].mean()
        mean.insert(0, "benchmark", "mean")
        mean["k"] = df.groupby(["policy", "budget"], sort=False)["k"].max().to_numpy()
        return pd.concat([df, mean[df.columns]], ignore_index=True)

    def at(
        self, budget: int, top: int = 3, policy: str = "region", benchmark: str = "mean", metric: str = "anytime"
    ) -> float:
        if metric not in METRICS:
            from lmms_ac.registry import UnknownEntryError

            raise UnknownEntryError("recall metric", metric, list(METRICS))
        df = self.to_frame()
        sel = df[(df.benchmark == benchmark) & (df.policy == policy) & (df.budget == budget)]
        if sel.empty:
            raise KeyError(f"no recall for benchmark={benchmark} policy={policy} budget={budget}")
        return float(sel[f"{metric}_recall@{top}"].iloc[0])

    def to_dict(self) -> Dict[str, object]:
        out: Dict[str, object] = {"options": self.options, "metrics": dict(METRIC_HELP), "benchmarks": {}}
        for c in self.curves:
            b = out["benchmarks"].setdefault(c.benchmark, {"k": c.k, "best": c.best, "policies": {}})
            doc = {f"recall@{top}": [float(x) for x in v] for top, v in c.recall.items()}
            for name in METRICS:
                doc.update({f"{name}_recall@{top}": [float(x) for x in v] for top, v in c.metric(name).items()})
            b["policies"][c.policy] = doc
        df = self.to_frame()
        mean = df[df.benchmark == "mean"]
        out["mean"] = {
            p: {col: g[col].tolist() for col in g.columns if "recall@" in col} for p, g in mean.groupby("policy")
        }
        return out


def _prepare(data: BenchmarkData) -> Tuple[Tuple[str, ...], np.ndarray, np.ndarray, int]:
    mask = data.scored
    if not mask.all():
        dropped = [s for s, m in zip(data.settings, mask) if not m]
        logger.warning(
            f"{data.benchmark}: settings without a score cannot be simulated and are left out: {', '.join(dropped)}"
        )
    settings = tuple(s for s, m in zip(data.settings, mask) if m)
    if len(settings) < 2:
        raise ValueError(
            f"benchmark {data.benchmark!r} has {len(settings)} scored setting(s); the policy "
            f"simulation needs at least 2"
        )
    y = data.score[mask]
    for arr, what in ((data.A[mask], "A"), (data.C[mask], "C")):
        if np.ptp(arr) == 0:
            logger.warning(
                f"{data.benchmark}: every setting has the same {what}; the (A, C) plane collapses "
                f"to a line and the law cannot use {what}"
            )
    if np.ptp(y) == 0:
        logger.warning(
            f"{data.benchmark}: every setting has the same score; any setting is 'the best' and recall says nothing"
        )
    if len(settings) <= N_LAW_PARAMS:
        logger.warning(
            f"{data.benchmark}: {len(settings)} settings for the law's {N_LAW_PARAMS} parameters: "
            f"every fit is (under)determined, so the law's ranking can only interpolate"
        )
    best = int(np.argmax(y))
    if (y == y[best]).sum() > 1:
        logger.warning(f"{data.benchmark}: several settings share the best score; the first one counts as best")
    return settings, normalize_plane(data.A[mask], data.C[mask]), y, best


def simulate_benchmark(
    data: BenchmarkData,
    policies: Sequence[str] = ("region", "random"),
    runs: int = 1000,
    seed: int = 0,
    tops: Sequence[int] = DEFAULT_TOPS,
    ucb_beta: float = UCB_BETA,
    ucb_lambda: float = UCB_LAMBDA,
    ranking: str = "measured",
    prior: Optional[LawPrior] = None,
    acquisition: str = "ei",
) -> List[PolicyCurve]:
    """Simulate ``runs`` seeded runs of each policy on one benchmark.

    ``ranking``: "measured" (trained settings by their measured score, the default) or "law" (the
    paper's: every setting by the law's prediction). ``prior`` is needed by the ``prior`` policy.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    specs = [POLICY_REGISTRY.get(p) for p in policies]
    if ranking not in RANKINGS:
        from lmms_ac.registry import UnknownEntryError

        raise UnknownEntryError("ranking", ranking, list(RANKINGS))
    settings, points, y, best = _prepare(data)
    curves = []
    for spec in specs:
        # ucb's warm-up reuses region's random draws (common random numbers for a paired comparison)
        rng = np.random.default_rng(_seed(seed, data.benchmark, spec.rng_stream))
        ctx = _Context(data.benchmark, points, y, runs, rng, ucb_beta, ucb_lambda, prior, acquisition)
        orders = spec.orders_fn()(ctx)
        predict = spec.predict_fn()
        if predict is None:
            trained_best = np.logical_or.accumulate(orders == best, axis=1).mean(axis=0)
            anytime = {top: trained_best.copy() for top in tops}
            final = {top: trained_best.copy() for top in tops}
        else:
            hits = hits_from_predictions(orders, y, best, lambda idx, c=ctx, f=predict: f(c, idx), tops, ranking)
            m = recall_metrics(hits, tops)
            anytime, final = m["anytime"], m["final"]
        curves.append(PolicyCurve(data.benchmark, spec.name, settings, settings[best], runs, anytime, final))
    return curves


def simulate(
    data: Mapping[str, BenchmarkData],
    policies: Sequence[str] = ("region", "random"),
    runs: int = 1000,
    seed: int = 0,
    tops: Sequence[int] = DEFAULT_TOPS,
    ucb_beta: float = UCB_BETA,
    ucb_lambda: float = UCB_LAMBDA,
    ranking: str = "measured",
    acquisition: str = "ei",
) -> PolicyReport:
    """Simulate every benchmark; see ``simulate_benchmark``.

    The ``prior`` policy is evaluated leave-benchmark-out: the prior of each benchmark is the law
    fitted on all the *other* benchmarks of ``data``.
    """
    if not data:
        raise ValueError("no benchmarks to simulate")
    curves: List[PolicyCurve] = []
    sources: Dict[str, List[str]] = {}
    for b, d in data.items():
        prior = None
        if "prior" in policies:
            prior = law_prior(data, exclude=[b])
            sources[b] = list(prior.sources)
        curves += simulate_benchmark(d, policies, runs, seed, tops, ucb_beta, ucb_lambda, ranking, prior, acquisition)
    options = {
        "policies": list(policies),
        "runs": runs,
        "seed": seed,
        "tops": list(tops),
        "ucb_beta": ucb_beta,
        "ucb_lambda": ucb_lambda,
        "ranking": ranking,
        "ranking_help": RANKING_HELP[ranking],
        "success": METRIC_HELP["anytime"] + " / " + METRIC_HELP["final"],
    }
    if "prior" in policies:
        options["prior"] = {"acquisition": acquisition, "evaluation": "leave-benchmark-out", "sources": sources}
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

        return _clean_json(
            {
                "policy": self.policy,
                "next": self.next,
                "options": self.options,
                "level": self.level,
                "notes": self.notes,
                "ranking": self.ranking.to_dict("records"),
            }
        )


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


def recommend(
    names: Sequence[str],
    A: np.ndarray,
    C: np.ndarray,
    trained: Mapping[str, float],
    policy: str = "region",
    seed: int = 0,
    ucb_beta: float = UCB_BETA,
    ucb_lambda: float = UCB_LAMBDA,
    prior: Optional[LawPrior] = None,
    acquisition: str = "ei",
) -> Recommendation:
    """Which candidate to train next and the current ranking of all candidates.

    ``trained`` maps candidate names to their benchmark score. The region policy draws one cell of the
    current level and one candidate in it (seeded); ``options`` lists one group per eligible cell.
    The ``prior`` policy needs ``prior`` (``law_prior`` on benchmarks with known scores); its
    ``predicted`` column is the posterior mean on the latent normalised scale. The ranking orders
    trained candidates by their measured score and untrained ones by prediction (column
    ``rank_score``; ``rank`` is the position of each candidate among the untrained ones or, for
    trained ones, among the trained).
    """
    names = [str(n) for n in names]
    unknown = [t for t in trained if t not in names]
    if unknown:
        from lmms_ac.registry import UnknownEntryError

        raise UnknownEntryError("candidate", unknown[0], names)
    spec = POLICY_REGISTRY.get(policy)
    if not spec.recommend:
        choices = [n for n in POLICY_REGISTRY.snapshot() if POLICY_REGISTRY.get(n).recommend]
        raise ValueError(f"recommend supports the policies {', '.join(choices)}, not {policy!r}")
    points = normalize_plane(A, C)
    k = len(names)
    tmask = np.array([n in trained for n in names])
    y = np.array([float(trained.get(n, np.nan)) for n in names])
    notes: List[str] = []
    X = _law_features(points)
    ranking = pd.DataFrame(
        {"variant": names, "A": np.asarray(A, float), "C": np.asarray(C, float), "trained": tmask, "score": y}
    )
    idx = np.flatnonzero(tmask)
    if k <= N_LAW_PARAMS:
        notes.append(f"{k} candidates for the law's {N_LAW_PARAMS} parameters: the law can at best interpolate")
    for arr, what in ((A, "A"), (C, "C")):
        if np.ptp(np.asarray(arr, float)) == 0:
            notes.append(f"every candidate has the same {what}: the law cannot use it")
    if policy == "prior":
        if prior is None:
            raise ValueError(
                "the prior policy needs a prior law (law_prior on benchmarks with known scores; "
                "`policy recommend --prior law-v1`)"
            )
        from lmms_ac.law.prior import PriorModel

        mean, _ = PriorModel(points, prior).posterior(idx, y[idx])
        ranking["predicted"] = mean
        notes.append(f"prior from {', '.join(prior.sources)}; predicted = posterior mean on the normalised scale")
    elif len(idx) >= 2:
        if len(idx) < X.shape[1] + 1:
            notes.append(
                f"{len(idx)} trained settings for {N_LAW_PARAMS} parameters: minimum-norm fit, ranking is tentative"
            )
        elif len(idx) == X.shape[1] + 1:
            notes.append(
                f"{len(idx)} trained settings for {N_LAW_PARAMS} parameters: the law passes through every "
                f"point (R² = 1 by construction)"
            )
        b, w = min_norm_fit(X[idx], y[idx])
        ranking["predicted"] = X @ w + b
    else:
        notes.append("fewer than 2 trained settings: no law fit yet, no ranking")
        ranking["predicted"] = np.nan
    if ranking["predicted"].notna().any():
        ranking["rank_score"] = np.where(tmask, y, ranking["predicted"])
        ranking["rank"] = ranking.groupby("trained")["rank_score"].rank(ascending=False, method="min").astype(int)
        ranking = ranking.sort_values(["trained", "rank"], ascending=[True, True], kind="stable").reset_index(drop=True)
    else:
        ranking["rank_score"] = np.where(tmask, y, np.nan)
        ranking["rank"] = pd.array([pd.NA] * k, dtype="Int64")
    rng = np.random.default_rng(_seed(seed, "recommend"))
    level: Optional[int] = None
    if tmask.all():
        return Recommendation(policy, None, [], None, ranking, notes + ["every candidate is trained"])
    if policy == "prior":
        from lmms_ac.law.prior import PriorModel, next_choice

        model = PriorModel(points, prior)
        nxt_i = next_choice(model, list(idx), y[idx], acquisition, rng)
        nxt = names[nxt_i]
        options = [nxt] + [n for n in ranking.loc[~ranking["trained"], "variant"] if n != nxt]
    elif policy == "region" or len(idx) < UCB_WARMUP:
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
