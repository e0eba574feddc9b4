"""Simulating a policy on settings with known scores: orders from the policy registry, recall of its ranking.

Every registered policy (``lmms_ac.law.policies``) names an ``orders(ctx) -> (runs, k)`` function and a
``predict(ctx, idx) -> (G, k)`` function (or none: success only when the best setting was trained);
the implementations below are the ones the registry names. ``simulate`` evaluates the ``prior``
policies leave-benchmark-out (the prior of each benchmark is the law on the *other* benchmarks of
the same table: optimistic, see ``lmms_ac.law.evaluate`` for protocols that hide what a user could not
know).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from loguru import logger

from lmms_ac.law import acquisition as Q
from lmms_ac.law import sampling as S
from lmms_ac.law.data import BenchmarkData
from lmms_ac.law.policies import POLICY_REGISTRY, UCB_WARMUP
from lmms_ac.law.prior import (
    LawPrior,
    checked_prior_orders,
    checked_prior_predictions,
    law_prior,
    prior_orders,
    prior_predictions,
)
from lmms_ac.law.recall import (
    DEFAULT_TOPS,
    METRIC_HELP,
    METRICS,
    RANKING_HELP,
    check_metric,
    check_ranking,
    hits_from_predictions,
    law_predict_sets,
    recall_metrics,
    trained_hits,
)

N_LAW_PARAMS = 6


@dataclass
class PolicyContext:
    """What a policy may read: the candidates' normalised (A, C), the scores (indexed only by trained
    settings), raw A (rank-by-A), the seeded generator and the options of the policies."""

    benchmark: str
    points: np.ndarray
    y: np.ndarray
    runs: int
    rng: np.random.Generator
    ucb_beta: float = Q.UCB_BETA
    ucb_lambda: float = Q.UCB_LAMBDA
    prior: Optional[LawPrior] = None
    acquisition: str = "ei"
    A: Optional[np.ndarray] = None


def need_prior(ctx: PolicyContext) -> LawPrior:
    if ctx.prior is None:
        raise ValueError(
            f"policy 'prior' on {ctx.benchmark}: no prior law; simulate it together with other "
            f"benchmarks (the prior is fitted on them) or pass prior=law_prior(...)"
        )
    return ctx.prior


# implementations named by the registry in lmms_ac.law.policies
def orders_region(c: PolicyContext) -> np.ndarray:
    return S.region_orders(c.points, c.runs, c.rng)


def orders_ucb(c: PolicyContext) -> np.ndarray:
    return Q.ucb_orders(c.points, c.y, c.runs, c.rng, c.ucb_beta, c.ucb_lambda, UCB_WARMUP)


def orders_bayes_ucb(c: PolicyContext) -> np.ndarray:
    return Q.ucb_orders(c.points, c.y, c.runs, c.rng, c.ucb_beta, c.ucb_lambda, warmup=1)


def predict_bayes(c: PolicyContext, idx: np.ndarray) -> np.ndarray:
    return Q.bayes_mean(S.law_features(c.points), c.y, idx, c.ucb_lambda)


def orders_greedy(c: PolicyContext) -> np.ndarray:
    return Q.greedy_orders(c.points, c.y, c.runs, c.rng)


def orders_thompson(c: PolicyContext) -> np.ndarray:
    return Q.thompson_orders(c.points, c.y, c.runs, c.rng, c.ucb_lambda, UCB_WARMUP)


def orders_prior(c: PolicyContext) -> np.ndarray:
    return prior_orders(c.points, c.y, need_prior(c), c.runs, c.rng, c.acquisition)


def orders_prior_check(c: PolicyContext) -> np.ndarray:
    return checked_prior_orders(c.points, c.y, need_prior(c), c.runs)


def orders_random(c: PolicyContext) -> np.ndarray:
    return S.random_orders(len(c.y), c.runs, c.rng)


def raw_a(c: PolicyContext) -> np.ndarray:
    return c.points[:, 0] if c.A is None else np.asarray(c.A, float)


def orders_rank_by_a(c: PolicyContext) -> np.ndarray:
    return S.a_orders(raw_a(c), c.runs, c.rng)


def predict_law(c: PolicyContext, idx: np.ndarray) -> np.ndarray:
    return law_predict_sets(c.points, c.y, idx)


def predict_a(c: PolicyContext, idx: np.ndarray) -> np.ndarray:
    return np.broadcast_to(raw_a(c), (len(idx), len(c.y)))


def predict_prior(c: PolicyContext, idx: np.ndarray) -> np.ndarray:
    return prior_predictions(c.points, c.y, need_prior(c), idx)


def predict_prior_check(c: PolicyContext, idx: np.ndarray) -> np.ndarray:
    return checked_prior_predictions(c.points, c.y, need_prior(c), idx)


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
        check_metric(name)
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
        check_metric(metric)
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


def prepare(data: BenchmarkData, warn: bool = True) -> Tuple[Tuple[str, ...], np.ndarray, np.ndarray, int]:
    """(settings, normalised points, scores, index of the best) of the scored settings of one benchmark."""
    mask = data.scored
    if not mask.all() and warn:
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
    if warn:
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
    if (y == y[best]).sum() > 1 and warn:
        logger.warning(f"{data.benchmark}: several settings share the best score; the first one counts as best")
    return settings, S.normalize_plane(data.A[mask], data.C[mask]), y, best


def policy_hits(
    spec_name: str,
    ctx: PolicyContext,
    best: int,
    tops: Sequence[int] = DEFAULT_TOPS,
    ranking: str = "measured",
) -> np.ndarray:
    """hits (runs, k, len(tops)) of one registered policy in one context."""
    spec = POLICY_REGISTRY.get(spec_name)
    orders = spec.orders_fn()(ctx)
    predict = spec.predict_fn()
    if predict is None:
        return trained_hits(orders, best, len(tops))
    return hits_from_predictions(orders, ctx.y, best, lambda idx: predict(ctx, idx), tops, ranking)


def simulate_benchmark(
    data: BenchmarkData,
    policies: Sequence[str] = ("region", "random"),
    runs: int = 1000,
    seed: int = 0,
    tops: Sequence[int] = DEFAULT_TOPS,
    ucb_beta: float = Q.UCB_BETA,
    ucb_lambda: float = Q.UCB_LAMBDA,
    ranking: str = "measured",
    prior: Optional[LawPrior] = None,
    acquisition: str = "ei",
) -> List[PolicyCurve]:
    """Simulate ``runs`` seeded runs of each policy on one benchmark.

    ``ranking``: "measured" (trained settings by their measured score, the default) or "law" (the
    paper's: every setting by the law's prediction). ``prior`` is needed by the prior policies.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    specs = [POLICY_REGISTRY.get(p) for p in policies]
    check_ranking(ranking)
    settings, points, y, best = prepare(data)
    A = data.A[data.scored]
    curves = []
    for spec in specs:
        # ucb's warm-up reuses region's random draws (common random numbers for a paired comparison)
        rng = np.random.default_rng(S.seed_sequence(seed, data.benchmark, spec.rng_stream))
        ctx = PolicyContext(data.benchmark, points, y, runs, rng, ucb_beta, ucb_lambda, prior, acquisition, A)
        m = recall_metrics(policy_hits(spec.name, ctx, best, tops, ranking), tops)
        curves.append(PolicyCurve(data.benchmark, spec.name, settings, settings[best], runs, m["anytime"], m["final"]))
    return curves


def simulate(
    data: Mapping[str, BenchmarkData],
    policies: Sequence[str] = ("region", "random"),
    runs: int = 1000,
    seed: int = 0,
    tops: Sequence[int] = DEFAULT_TOPS,
    ucb_beta: float = Q.UCB_BETA,
    ucb_lambda: float = Q.UCB_LAMBDA,
    ranking: str = "measured",
    acquisition: str = "ei",
) -> PolicyReport:
    """Simulate every benchmark; see ``simulate_benchmark``.

    The prior policies are evaluated leave-benchmark-out: the prior of each benchmark is the law
    fitted on all the *other* benchmarks of ``data``.
    """
    if not data:
        raise ValueError("no benchmarks to simulate")
    uses_prior = any(POLICY_REGISTRY.get(p).min_benchmarks > 1 for p in policies)
    curves: List[PolicyCurve] = []
    sources: Dict[str, List[str]] = {}
    for b, d in data.items():
        prior = None
        if uses_prior:
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
    if uses_prior:
        options["prior"] = {"acquisition": acquisition, "evaluation": "leave-benchmark-out", "sources": sources}
    return PolicyReport(curves, options)
