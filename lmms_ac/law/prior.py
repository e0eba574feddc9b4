"""The ``prior`` policy: the law fitted on other benchmarks as a prior, updated on the target benchmark.

Model (all in the target's min-max normalised (A, C) plane over its k candidates, which needs only
A and C, never a score):

- every source benchmark b (fully scored elsewhere) gives the degree-2 law's weights w_b (intercept +
  A, C, A², AC, C²) fitted by least squares on its min-max normalised (A, C) and min-max normalised
  score; the prior over the target's law is w ~ N(mu, S), mu = mean_b w_b, S = cov_b w_b + ``ridge`` I;
- the target's latent normalised score is then a Gaussian process z = X w + e with mean g = X mu and
  covariance K = X S X^T + ``nugget`` I (e: what the law does not explain);
- its raw scores are y = a + s z with an unknown offset a and scale s > 0. With t >= 3 trained
  settings (a, s) are the generalised least-squares fit of y_T on g_T (weights K_TT^-1); with fewer
  there is nothing to calibrate and the trained settings sit on the prior (z_T = g_T). If the fitted
  s is not positive the prior's shape disagrees with the target and the trained scores are placed on
  the prior's range by their own ranks' spread (z_T = mean(g_T) + std(g_T) * standardised y_T);
- posterior mean and variance of z at every candidate follow from GP conditioning on z_T.

Choice of the next setting: expected improvement over the best trained z (``ei``, deterministic, the
default) or Thompson sampling (``thompson``, one posterior draw per step). With nothing trained the
choice is the prior mean's best. Ranking for Recall: the posterior mean (trained settings by their
measured score unless the paper's ranking is asked for; see ``policy``).

Only the trained settings' scores are ever read: ``prior_orders`` indexes the score vector with the
settings already chosen (tested by scrambling the untrained scores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from lmms_ac.law.data import BenchmarkData
from lmms_ac.law.linalg import poly_features
from lmms_ac.law.options import ACQUISITIONS  # noqa: F401 (re-exported)

PRIOR_RIDGE = 0.01
PRIOR_NUGGET = 0.01


def _design(points: np.ndarray) -> np.ndarray:
    """(k, 6) intercept + degree-2 features of normalised (A, C) points."""
    return np.c_[np.ones(len(points)), poly_features(points, 2)]


def _plane(A: np.ndarray, C: np.ndarray) -> np.ndarray:
    pts = np.stack([np.asarray(A, float), np.asarray(C, float)], axis=-1)
    lo, hi = pts.min(0), pts.max(0)
    return (pts - lo) / np.where(hi > lo, hi - lo, 1.0)


@dataclass(frozen=True)
class LawPrior:
    """Gaussian prior over the normalised law's 6 weights, with the benchmarks it came from."""

    mean: np.ndarray
    cov: np.ndarray
    sources: Tuple[str, ...]
    nugget: float = PRIOR_NUGGET
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {
            "sources": list(self.sources),
            "mean": [float(v) for v in self.mean],
            "nugget": self.nugget,
            "notes": list(self.notes),
        }


def source_weights(data: BenchmarkData) -> np.ndarray:
    """The law's weights on one fully or partly scored benchmark (normalised over its scored settings)."""
    m = data.scored
    if m.sum() < 3:
        raise ValueError(f"prior source {data.benchmark!r} has {int(m.sum())} scored settings; needs at least 3")
    y = data.score[m]
    if np.ptp(y) == 0:
        raise ValueError(f"prior source {data.benchmark!r} has a constant score; it carries no law")
    X = _design(_plane(data.A[m], data.C[m]))
    w, *_ = np.linalg.lstsq(X, (y - y.min()) / np.ptp(y), rcond=None)
    return w


def law_prior(
    sources: Mapping[str, BenchmarkData],
    exclude: Sequence[str] = (),
    ridge: float = PRIOR_RIDGE,
    nugget: float = PRIOR_NUGGET,
) -> LawPrior:
    """The prior from every benchmark of ``sources`` except ``exclude`` (the target: leave it out)."""
    names = [b for b in sources if b not in set(exclude)]
    if not names:
        raise ValueError(
            "the prior policy needs the law on at least one other benchmark; give more benchmarks "
            "(policy simulation) or a prior source (recommend --prior)"
        )
    W = np.stack([source_weights(sources[b]) for b in names])
    notes = []
    if len(names) == 1:
        cov = np.eye(W.shape[1]) * max(ridge, 0.05)
        notes.append(f"one source benchmark ({names[0]}): isotropic prior covariance")
    else:
        cov = np.cov(W.T) + ridge * np.eye(W.shape[1])
    return LawPrior(W.mean(0), cov, tuple(names), nugget, tuple(notes))


class PriorModel:
    """The prior GP of one target benchmark over its k candidates (see module doc)."""

    def __init__(self, points: np.ndarray, prior: LawPrior):
        X = _design(points)
        self.g = X @ prior.mean
        self.K = X @ prior.cov @ X.T + prior.nugget * np.eye(len(points))

    def calibrate(self, idx: np.ndarray, y_trained: np.ndarray) -> np.ndarray:
        """Trained scores on the latent normalised scale (see module doc)."""
        g = self.g[idx]
        if len(idx) < 3:
            return g.copy()
        Ki = np.linalg.inv(self.K[np.ix_(idx, idx)])
        G = np.c_[np.ones(len(idx)), g]
        a, s = np.linalg.solve(G.T @ Ki @ G, G.T @ Ki @ y_trained)
        if s > 0:
            return (y_trained - a) / s
        sd = y_trained.std()
        zs = (y_trained - y_trained.mean()) / (sd if sd > 0 else 1.0)
        return g.mean() + g.std() * zs

    def posterior(self, idx: Sequence[int], y_trained: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the latent score of every candidate."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            return self.g.copy(), np.sqrt(np.diag(self.K))
        z = self.calibrate(idx, np.asarray(y_trained, float))
        KTT = self.K[np.ix_(idx, idx)]
        KAT = self.K[:, idx]
        sol = np.linalg.solve(KTT, np.c_[z - self.g[idx], KAT.T])
        mean = self.g + KAT @ sol[:, 0]
        var = np.diag(self.K) - np.einsum("ij,ji->i", KAT, sol[:, 1:])
        mean[idx] = z
        return mean, np.sqrt(np.maximum(var, 0.0))


def _expected_improvement(mean: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    from scipy.special import ndtr  # the normal cdf without scipy.stats' per-call overhead

    sd = np.maximum(sd, 1e-12)
    u = (mean - best) / sd
    return (mean - best) * ndtr(u) + sd * np.exp(-0.5 * u * u) / np.sqrt(2.0 * np.pi)


def next_choice(
    model: PriorModel,
    idx: Sequence[int],
    y_trained: np.ndarray,
    acquisition: str = "ei",
    rng: Optional[np.random.Generator] = None,
) -> int:
    """The candidate to train next given the trained indices and their scores."""
    if acquisition not in ACQUISITIONS:
        from lmms_ac.registry import UnknownEntryError

        raise UnknownEntryError("acquisition", acquisition, list(ACQUISITIONS))
    idx = list(idx)
    mean, sd = model.posterior(idx, y_trained)
    if not idx:
        score = mean.copy()
    elif acquisition == "ei":
        score = _expected_improvement(mean, sd, float(mean[idx].max()))
    else:
        rng = rng if rng is not None else np.random.default_rng(0)
        score = mean + sd * rng.standard_normal(len(mean))
    score[idx] = -np.inf
    return int(np.argmax(score))


def prior_orders(
    points: np.ndarray, y: np.ndarray, prior: LawPrior, runs: int, rng: np.random.Generator, acquisition: str = "ei"
) -> np.ndarray:
    """Training orders (runs, k); each step reads only the scores of the settings already trained."""
    model = PriorModel(points, prior)
    k = len(points)
    n_distinct = 1 if acquisition == "ei" else runs  # EI is deterministic: one order serves every run
    orders = np.empty((n_distinct, k), dtype=np.int64)
    for r in range(n_distinct):
        chosen: List[int] = []
        for _ in range(k):
            chosen.append(next_choice(model, chosen, y[chosen], acquisition, rng))
        orders[r] = chosen
    return np.repeat(orders, runs, axis=0) if n_distinct == 1 else orders


def prior_predictions(points: np.ndarray, y: np.ndarray, prior: LawPrior, sets: np.ndarray) -> np.ndarray:
    """Posterior means (G, k) given each row of ``sets`` (G, t) as the trained settings."""
    model = PriorModel(points, prior)
    return np.stack([model.posterior(s, y[s])[0] for s in sets])


#: the prior is dropped once the trained settings' scores rank-correlate with its mean below this
PRIOR_AGREEMENT = 0.7
#: below this many trained settings the law of the fallback is linear (3 weights), then degree 2
LINEAR_UNTIL = 7


def prior_agrees(model: PriorModel, idx: Sequence[int], y_trained: np.ndarray) -> bool:
    """Whether the trained scores agree with the prior: with 2 trained, the better one is the one the prior
    mean ranks higher; from 3 on, Spearman ρ(y_T, prior mean_T) >= ``PRIOR_AGREEMENT`` (a constant side
    counts as disagreement). Always true before 2 trainings."""
    idx = np.asarray(idx, dtype=np.int64)
    g = model.g[idx]
    if idx.size < 2:
        return True
    if np.ptp(y_trained) == 0 or np.ptp(g) == 0:
        return False
    if idx.size == 2:
        return bool(np.sign(y_trained[1] - y_trained[0]) == np.sign(g[1] - g[0]))
    ry = np.argsort(np.argsort(y_trained)).astype(float)
    rg = np.argsort(np.argsort(g)).astype(float)
    return float(np.corrcoef(ry, rg)[0, 1]) >= PRIOR_AGREEMENT


def fallback_law_mean(points: np.ndarray, idx: np.ndarray, y_trained: np.ndarray) -> np.ndarray:
    """The law fitted on the trained settings alone: linear in (A, C) below ``LINEAR_UNTIL`` trained (a
    degree-2 fit on so few points is erratic), degree 2 from then on (minimum norm while underdetermined)."""
    from lmms_ac.law.linalg import min_norm_fit

    X = _design(points)
    cols = X[:, 1:3] if len(idx) < LINEAR_UNTIL else X[:, 1:]
    b, w = min_norm_fit(cols[idx], y_trained)
    return cols @ w + b


def checked_prior_orders(points: np.ndarray, y: np.ndarray, prior: LawPrior, runs: int) -> np.ndarray:
    """The prior policy while the trained settings agree with it (``prior_agrees``); once they do not,
    the law fitted on the trained settings alone picks its predicted best untrained setting. Deterministic:
    one order, repeated for every run."""
    model = PriorModel(points, prior)
    k = len(points)
    chosen: List[int] = []
    for _ in range(k):
        idx = np.asarray(chosen, dtype=np.int64)
        if prior_agrees(model, idx, y[idx]):
            nxt = next_choice(model, chosen, y[idx], "ei")
        else:
            score = fallback_law_mean(points, idx, y[idx])
            score[idx] = -np.inf
            nxt = int(np.argmax(score))
        chosen.append(nxt)
    return np.repeat(np.asarray(chosen, dtype=np.int64)[None, :], runs, axis=0)


def checked_prior_predictions(points: np.ndarray, y: np.ndarray, prior: LawPrior, sets: np.ndarray) -> np.ndarray:
    """Posterior means where the trained set agrees with the prior, the plain law's predictions elsewhere."""
    model = PriorModel(points, prior)
    out = []
    for s in sets:
        out.append(model.posterior(s, y[s])[0] if prior_agrees(model, s, y[s]) else fallback_law_mean(points, s, y[s]))
    return np.stack(out)
