"""``recommend``: the next candidate to train given what is trained so far, through the policy registry.

Each registered policy names a ``next(ctx) -> Choice`` function here (``PolicySpec.next``); ``recommend``
builds the context once, asks the chosen policy, ranks every candidate (trained ones by their measured
score, untrained ones by the policy's prediction) and says which policy chose, why, and the recall
``lmms_ac.law.evaluate`` expects of it on these candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from lmms_ac.law import acquisition as Q
from lmms_ac.law.linalg import min_norm_fit
from lmms_ac.law.policies import DEFAULT_POLICY, POLICY_REGISTRY, UCB_WARMUP, recommend_policy_names
from lmms_ac.law.prior import LawPrior, PriorModel, fallback_law_mean, next_choice, prior_agrees
from lmms_ac.law.sampling import law_features, normalize_plane, region_next, seed_sequence

N_LAW_PARAMS = 6


@dataclass
class RecommendContext:
    names: List[str]
    A: np.ndarray
    points: np.ndarray
    y: np.ndarray  # NaN where untrained
    trained: np.ndarray  # bool mask
    rng: np.random.Generator
    prior: Optional[LawPrior] = None
    acquisition: str = "ei"
    ucb_beta: float = Q.UCB_BETA
    ucb_lambda: float = Q.UCB_LAMBDA

    @property
    def idx(self) -> np.ndarray:
        return np.flatnonzero(self.trained)


@dataclass
class Choice:
    """A policy's answer: the candidate index, the alternatives it weighed, the region level (region only)."""

    next: int
    options: List[str]
    why: str
    predicted: np.ndarray  # what ranks the untrained candidates (NaN: no ranking yet)
    level: Optional[int] = None
    notes: List[str] = field(default_factory=list)


@dataclass
class Recommendation:
    policy: str
    next: Optional[str]
    options: List[str]
    level: Optional[int]
    ranking: pd.DataFrame
    notes: List[str] = field(default_factory=list)
    why: str = ""
    expected: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, object]:
        from lmms_ac.law.fit import clean_json

        return clean_json(
            {
                "policy": self.policy,
                "next": self.next,
                "why": self.why,
                "expected": self.expected,
                "options": self.options,
                "level": self.level,
                "notes": self.notes,
                "ranking": self.ranking.to_dict("records"),
            }
        )


def _untrained_by(score: np.ndarray, ctx: RecommendContext) -> List[int]:
    score = np.where(ctx.trained, -np.inf, score)
    return [int(i) for i in np.argsort(-score, kind="stable") if not ctx.trained[i]]


def law_mean(ctx: RecommendContext) -> np.ndarray:
    """The law fitted on the trained candidates, predicted for all (min-norm while underdetermined)."""
    X = law_features(ctx.points)
    b, w = min_norm_fit(X[ctx.idx], ctx.y[ctx.idx])
    return X @ w + b


# implementations named by the registry in lmms_ac.law.policies
def next_region(ctx: RecommendContext) -> Choice:
    level, cells = region_next(ctx.points, ctx.trained)
    cell = cells[int(ctx.rng.integers(len(cells)))]
    nxt = int(cell[int(ctx.rng.integers(len(cell)))])
    options = [" | ".join(ctx.names[i] for i in c) for c in cells]
    why = (
        f"region sampling spreads the trainings over the (A, C) plane: at grid level {level}, {len(cells)} "
        "cell(s) hold no trained candidate; one was drawn (seeded) and a candidate in it"
    )
    notes: List[str] = []
    return Choice(nxt, options, why, law_ranking(ctx, notes), level, notes)


def _warmup(ctx: RecommendContext, name: str, needed: int) -> Optional[Choice]:
    if len(ctx.idx) >= needed:
        return None
    c = next_region(ctx)
    c.notes.append(f"{name} warm-up: the first {needed} candidates are drawn like the region policy")
    return c


def next_ucb(ctx: RecommendContext) -> Choice:
    warm = _warmup(ctx, "ucb", UCB_WARMUP)
    if warm:
        return warm
    score = Q.ucb_scores(law_features(ctx.points), np.nan_to_num(ctx.y), ctx.idx, ctx.ucb_beta, ctx.ucb_lambda)
    order = _untrained_by(score, ctx)
    why = f"highest upper confidence bound (mean + {ctx.ucb_beta:g}·std) of a Bayesian degree-2 law"
    return Choice(order[0], [ctx.names[i] for i in order], why, law_ranking(ctx, []))


def next_bayes_ucb(ctx: RecommendContext) -> Choice:
    warm = _warmup(ctx, "bayes-ucb", 1)
    if warm:
        return warm
    X = law_features(ctx.points)
    y = np.nan_to_num(ctx.y)
    score = Q.ucb_scores(X, y, ctx.idx, ctx.ucb_beta, ctx.ucb_lambda)
    order = _untrained_by(score, ctx)
    pred = Q.bayes_mean(X, y, ctx.idx, ctx.ucb_lambda)
    notes = [] if len(ctx.idx) >= 2 else ["one trained setting: the posterior mean ranks nothing yet"]
    why = (
        f"highest upper confidence bound (mean + {ctx.ucb_beta:g}·std) of a Bayesian degree-2 law fitted on the "
        f"{len(ctx.idx)} trained; predicted = its posterior mean (standardised scale)"
    )
    return Choice(order[0], [ctx.names[i] for i in order], why, pred, notes=notes)


def next_thompson(ctx: RecommendContext) -> Choice:
    warm = _warmup(ctx, "thompson", UCB_WARMUP)
    if warm:
        return warm
    X = law_features(ctx.points)
    D, w, cov, _ = Q.bayes_posterior(X, np.nan_to_num(ctx.y), ctx.idx, ctx.ucb_lambda)
    draw = ctx.rng.multivariate_normal(w, cov)
    order = _untrained_by(D @ draw, ctx)
    why = "best candidate of one (seeded) posterior draw of the Bayesian degree-2 law"
    return Choice(order[0], [ctx.names[i] for i in order], why, law_ranking(ctx, []))


def next_greedy(ctx: RecommendContext) -> Choice:
    warm = _warmup(ctx, "greedy", Q.GREEDY_SEEDS)
    if warm:
        return warm
    notes: List[str] = []
    pred = law_ranking(ctx, notes)
    order = _untrained_by(pred, ctx)
    why = "the law fitted on the trained candidates predicts it best"
    return Choice(order[0], [ctx.names[i] for i in order], why, pred, notes=notes)


def next_rank_by_a(ctx: RecommendContext) -> Choice:
    order = _untrained_by(np.asarray(ctx.A, float), ctx)
    why = "the highest A among the untrained candidates"
    return Choice(order[0], [ctx.names[i] for i in order], why, np.asarray(ctx.A, float).copy())


def _need_prior(ctx: RecommendContext) -> LawPrior:
    if ctx.prior is None:
        raise ValueError(
            "the prior policies need a prior law from a table you name (`policy recommend --prior FILE "
            "--prior-benchmarks ...` or --prior law-v1), computed with the candidates' A and C definitions"
        )
    return ctx.prior


def next_prior(ctx: RecommendContext) -> Choice:
    model = PriorModel(ctx.points, _need_prior(ctx))
    nxt = next_choice(model, list(ctx.idx), ctx.y[ctx.idx], ctx.acquisition, ctx.rng)
    mean, _ = model.posterior(ctx.idx, ctx.y[ctx.idx])
    order = [nxt] + [i for i in _untrained_by(mean, ctx) if i != nxt]
    why = f"{ctx.acquisition} under the prior law from {', '.join(ctx.prior.sources)}, updated on the trained"
    note = f"prior from {', '.join(ctx.prior.sources)}; predicted = posterior mean on the normalised scale"
    return Choice(nxt, [ctx.names[i] for i in order], why, mean, notes=[note])


def next_prior_check(ctx: RecommendContext) -> Choice:
    model = PriorModel(ctx.points, _need_prior(ctx))
    if prior_agrees(model, ctx.idx, ctx.y[ctx.idx]):
        c = next_prior(ctx)
        c.why += " (the trained candidates agree with the prior)"
        return c
    notes: List[str] = []
    pred = fallback_law_mean(ctx.points, ctx.idx, ctx.y[ctx.idx])
    order = _untrained_by(pred, ctx)
    why = "the trained candidates disagree with the prior: the law fitted on them alone (linear below 7 trained)"
    return Choice(order[0], [ctx.names[i] for i in order], why, pred, notes=notes)


def law_ranking(ctx: RecommendContext, notes: List[str]) -> np.ndarray:
    """The law's predictions that rank the untrained candidates (NaN before 2 trainings), with notes."""
    idx = ctx.idx
    if len(idx) < 2:
        notes.append("fewer than 2 trained settings: no law fit yet, no ranking")
        return np.full(len(ctx.names), np.nan)
    p = N_LAW_PARAMS
    if len(idx) < p:
        notes.append(f"{len(idx)} trained settings for {p} parameters: minimum-norm fit, ranking is tentative")
    elif len(idx) == p:
        notes.append(
            f"{len(idx)} trained settings for {p} parameters: the law passes through every point "
            "(R² = 1 by construction)"
        )
    return law_mean(ctx)


def recommend(
    names: Sequence[str],
    A: np.ndarray,
    C: np.ndarray,
    trained: Mapping[str, float],
    policy: str = DEFAULT_POLICY,
    seed: int = 0,
    ucb_beta: float = Q.UCB_BETA,
    ucb_lambda: float = Q.UCB_LAMBDA,
    prior: Optional[LawPrior] = None,
    acquisition: str = "ei",
    expected_worlds: int = 0,
) -> Recommendation:
    """Which candidate to train next and the current ranking of all candidates.

    ``trained`` maps candidate names to their benchmark score; ``policy`` is any registered policy with a
    ``next`` function (default ``DEFAULT_POLICY``). The ranking orders trained candidates by their measured
    score and untrained ones by the policy's prediction (column ``rank_score``; ``rank`` is the position
    among the untrained or, for trained ones, among the trained). ``expected_worlds`` > 0: the final
    Recall@3 ``lmms_ac.law.evaluate.expected_recall`` measures for this policy and region on random laws
    over these candidates' own (A, C), at the next budget and at k' = 4.
    """
    names = [str(n) for n in names]
    unknown = [t for t in trained if t not in names]
    if unknown:
        from lmms_ac.registry import UnknownEntryError

        raise UnknownEntryError("candidate", unknown[0], names)
    spec = POLICY_REGISTRY.get(policy)
    if not spec.recommend:
        raise ValueError(f"recommend supports the policies {', '.join(recommend_policy_names())}, not {policy!r}")
    points = normalize_plane(A, C)
    k = len(names)
    tmask = np.array([n in trained for n in names])
    y = np.array([float(trained.get(n, np.nan)) for n in names])
    ctx = RecommendContext(
        names,
        np.asarray(A, float),
        points,
        y,
        tmask,
        np.random.default_rng(seed_sequence(seed, "recommend")),
        prior,
        acquisition,
        ucb_beta,
        ucb_lambda,
    )
    notes: List[str] = []
    if k <= N_LAW_PARAMS:
        notes.append(f"{k} candidates for the law's {N_LAW_PARAMS} parameters: the law can at best interpolate")
    for arr, what in ((A, "A"), (C, "C")):
        if np.ptp(np.asarray(arr, float)) == 0:
            notes.append(f"every candidate has the same {what}: the law cannot use it")
    ranking = pd.DataFrame(
        {"variant": names, "A": np.asarray(A, float), "C": np.asarray(C, float), "trained": tmask, "score": y}
    )
    choice = spec.next_fn()(ctx) if not tmask.all() else None
    ranking["predicted"] = choice.predicted if choice else law_ranking(ctx, [])
    if ranking["predicted"].notna().any():
        ranking["rank_score"] = np.where(tmask, y, ranking["predicted"])
        ranking["rank"] = ranking.groupby("trained")["rank_score"].rank(ascending=False, method="min").astype(int)
        ranking = ranking.sort_values(["trained", "rank"], ascending=[True, True], kind="stable").reset_index(drop=True)
    else:
        ranking["rank_score"] = np.where(tmask, y, np.nan)
        ranking["rank"] = pd.array([pd.NA] * k, dtype="Int64")
    expected: Dict[str, float] = {}
    if expected_worlds > 0:
        from lmms_ac.law.evaluate import expected_recall

        expected = expected_recall(points, policy, int(tmask.sum()), worlds=expected_worlds, seed=seed)
    if choice is None:
        return Recommendation(policy, None, [], None, ranking, notes + ["every candidate is trained"], "", expected)
    return Recommendation(
        policy, names[choice.next], choice.options, choice.level, ranking, notes + choice.notes, choice.why, expected
    )
