"""Training orders guided by the law fitted on what is trained so far (beyond the paper).

- ``ucb``: region sampling for ``warmup`` settings (the same random draws as ``region``), then the
  untrained setting with the highest mean + beta * std of a Bayesian degree-2 law (ridge posterior on
  the centred features with prior precision ``lam``, scores standardised on the trained settings;
  beta = 2, lam = 0.1, chosen on synthetic random quadratic laws, not on the bundled data).
- ``greedy``: region sampling for ``seeds`` settings, then the untrained setting the least-squares law
  (minimum norm while underdetermined) predicts highest ("fit the law on 2 seeds, then greedy").
- ``bayes-ucb``: one region-sampled setting, then the UCB choice of the same Bayesian law from the second
  training on; its posterior mean (``bayes_mean``), not the least-squares law, ranks the untrained.
- ``thompson``: region sampling for ``warmup`` settings, then the argmax of one draw of the same
  Bayesian law (Thompson sampling on its prediction interval), one draw per run and step.

Only the scores of settings already trained are read (indexing ``y`` by the trained sets). Choices
that depend only on the set trained so far are computed once per distinct set.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from lmms_ac.law.linalg import min_norm_fit
from lmms_ac.law.sampling import law_features, region_orders

UCB_BETA = 2.0
UCB_LAMBDA = 0.1
GREEDY_SEEDS = 2


def unique_rows(member: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a boolean (R, k) matrix: (index of a representative per row group, inverse)."""
    _, first, inverse = np.unique(np.packbits(member, axis=1), axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def bayes_posterior(X: np.ndarray, y: np.ndarray, idx: np.ndarray, lam: float):
    """Ridge posterior of the degree-2 law given trained settings ``idx`` (..., t), scores standardised.

    Returns (D, w, cov, t): centred features of all candidates (..., k, q), posterior mean (..., q),
    covariance (..., q, q) (unit noise) and the number trained.
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
    return X - xm, w, cov, t


def bayes_mean(X: np.ndarray, y: np.ndarray, idx: np.ndarray, lam: float = UCB_LAMBDA) -> np.ndarray:
    """Posterior mean (standardised scale) of the Bayesian degree-2 law given trained sets ``idx`` (G, t) -> (G, k).

    With one trained setting it is 0 everywhere (nothing ranks yet)."""
    D, w, _, _ = bayes_posterior(X, y, idx, lam)
    return np.einsum("...kq,...q->...k", D, w)


def ucb_scores(X: np.ndarray, y: np.ndarray, idx: np.ndarray, beta: float, lam: float) -> np.ndarray:
    """mean + beta * std of the Bayesian degree-2 law given trained settings ``idx`` (..., t) -> (..., k)."""
    D, w, cov, t = bayes_posterior(X, y, idx, lam)
    mean = np.einsum("...kq,...q->...k", D, w)
    std = np.sqrt(1.0 / t + np.einsum("...ki,...ij,...kj->...k", D, cov, D))
    return mean + beta * std


def _set_driven(points: np.ndarray, runs: int, rng: np.random.Generator, warmup: int, score_sets) -> np.ndarray:
    """Region sampling for ``warmup`` settings, then at each step the argmax of ``score_sets(idx)``."""
    k = points.shape[0]
    orders = region_orders(points, runs, rng)
    member = np.zeros((runs, k), dtype=bool)
    start = max(1, min(warmup, k))
    np.put_along_axis(member, orders[:, :start], True, axis=1)
    for t in range(start, k):
        first, inverse = unique_rows(member)
        sets = member[first]  # (G, k), t trained each
        score = score_sets(np.nonzero(sets)[1].reshape(len(first), t))
        score[sets] = -np.inf
        orders[:, t] = np.argmax(score, axis=1)[inverse]
        member[np.arange(runs), orders[:, t]] = True
    return orders


def ucb_orders(
    points: np.ndarray,
    y: np.ndarray,
    runs: int,
    rng: np.random.Generator,
    beta: float = UCB_BETA,
    lam: float = UCB_LAMBDA,
    warmup: int = 4,
) -> np.ndarray:
    """UCB orders: region-based sampling for ``warmup`` settings, then the UCB choice at each step."""
    X = law_features(points)
    return _set_driven(points, runs, rng, warmup, lambda idx: ucb_scores(X, y, idx, beta, lam))


def greedy_orders(
    points: np.ndarray, y: np.ndarray, runs: int, rng: np.random.Generator, seeds: int = GREEDY_SEEDS
) -> np.ndarray:
    """Region sampling for ``seeds`` settings, then the law's predicted best untrained one each step."""
    X = law_features(points)

    def predicted(idx: np.ndarray) -> np.ndarray:
        b, w = min_norm_fit(X[idx], y[idx])
        return w @ X.T + b[:, None]

    return _set_driven(points, runs, rng, seeds, predicted)


def thompson_orders(
    points: np.ndarray,
    y: np.ndarray,
    runs: int,
    rng: np.random.Generator,
    lam: float = UCB_LAMBDA,
    warmup: int = 4,
) -> np.ndarray:
    """Region sampling for ``warmup`` settings, then the argmax of one posterior draw per run and step."""
    k = points.shape[0]
    X = law_features(points)
    orders = region_orders(points, runs, rng)
    member = np.zeros((runs, k), dtype=bool)
    start = max(1, min(warmup, k))
    np.put_along_axis(member, orders[:, :start], True, axis=1)
    for t in range(start, k):
        idx = np.sort(orders[:, :t], axis=1)
        D, w, cov, _ = bayes_posterior(X, y, idx, lam)
        L = np.linalg.cholesky(cov + 1e-12 * np.eye(cov.shape[-1]))
        draw = w + np.einsum("rij,rj->ri", L, rng.standard_normal(w.shape))
        score = np.einsum("rkq,rq->rk", D, draw)
        score[member] = -np.inf
        orders[:, t] = np.argmax(score, axis=1)
        member[np.arange(runs), orders[:, t]] = True
    return orders
