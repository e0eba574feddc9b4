"""The law's prediction intervals and how often they cover what they claim.

Methods (``INTERVALS``), half-widths in the fit's (normalised) units:
- ``ols``: the classical OLS prediction interval, t_{n-p} quantile times sqrt(s² (1 + x0ᵀ(XᵀX)⁻¹x0)),
  s² = RSS / (n - p); undefined when n <= p (then the ``loo`` interval is used, with a warning).
- ``loo``: jackknife, the ceil((n+1)·level)-th smallest absolute leave-one-out residual (one width for all).
- ``conformal``: studentised jackknife (split-free conformal on leave-one-out residuals): each absolute
  leave-one-out residual is divided by the OLS predictive standard deviation of its own left-out fit
  (what ``ols`` would have used at that point); the half-width at x0 is the level·(1 + 1/n) quantile of
  these ratios (the split-conformal rank, linearly interpolated: the ceil((n+1)·level)-th order statistic
  is the largest ratio on ~12 points and covered 0.97 of the law-v1 settings, the plain ``level``
  quantile 0.87) times the predictive standard deviation at x0 of the full fit. It keeps
  the OLS shape (wider far from the data) and takes its scale from what leaving a point out really
  costs; where a left-out fit has no residual degrees of freedom it falls back to ``loo``.

``coverage`` measures each method by leave-one-setting-out: every scored setting in turn is left out,
the law fitted on the rest, and the setting counts as covered when its score lies in the interval.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np

from lmms_ac.law.linalg import loo_predictions, min_norm_fit, poly_features
from lmms_ac.law.options import INTERVALS


def _pred_sd(X: np.ndarray, y: np.ndarray, X0: np.ndarray) -> Tuple[np.ndarray, int]:
    """OLS predictive sd at X0 (with intercept) and the residual degrees of freedom (0: undefined)."""
    n, q = X.shape
    p = q + 1
    Xf = np.c_[np.ones(n), X]
    if n <= p or np.linalg.matrix_rank(Xf) < p:
        return np.full(len(X0), np.nan), 0
    beta = np.linalg.lstsq(Xf, y, rcond=None)[0]
    resid = y - Xf @ beta
    s2 = float(resid @ resid) / (n - p)
    cov = np.linalg.pinv(Xf.T @ Xf)
    X0f = np.c_[np.ones(len(X0)), X0]
    return np.sqrt(s2 * (1.0 + np.einsum("mi,ij,mj->m", X0f, cov, X0f))), n - p


def _rank(n: int, level: float) -> int:
    return min(int(math.ceil((n + 1) * level)), n)


def half_widths(
    X: np.ndarray, y: np.ndarray, X0: np.ndarray, method: str, level: float, warn: List[str], bench: str
) -> Tuple[np.ndarray, str]:
    """Half-widths of the law's prediction intervals at X0 and the method actually used."""
    from scipy.stats import t as student_t

    if method not in INTERVALS:
        raise ValueError(f"unknown interval {method!r}; choose one of {', '.join(INTERVALS)}")
    n, q = X.shape
    p = q + 1
    if method == "ols":
        sd, df = _pred_sd(X, y, X0)
        if df > 0:
            return student_t.ppf(0.5 + level / 2.0, df) * sd, "ols"
        warn.append(
            f"{bench}: OLS prediction interval needs more points than parameters ({n} <= {p}); "
            f"using the leave-one-out interval"
        )
    if n < 3:
        warn.append(f"{bench}: too few points ({n}) for a prediction interval")
        return np.full(len(X0), np.nan), "none"
    absres = np.abs(y - loo_predictions(X, y))
    if method == "conformal":
        sd0, df = _pred_sd(X, y, X0)
        ratios = []
        for i in range(n):
            keep = np.arange(n) != i
            sdi, dfi = _pred_sd(X[keep], y[keep], X[i : i + 1])
            ratios.append(absres[i] / sdi[0] if dfi > 0 and sdi[0] > 0 else np.nan)
        r = np.asarray(ratios)
        if df > 0 and not np.isnan(r).any():
            return float(np.quantile(r, min(1.0, level * (1.0 + 1.0 / n)))) * sd0, "conformal"
        warn.append(f"{bench}: {n} points leave a left-out fit no residual freedom; using the leave-one-out interval")
    return np.full(len(X0), np.sort(absres)[_rank(n, level) - 1]), "loo"


def coverage(points: np.ndarray, z: np.ndarray, level: float = 0.9, methods=INTERVALS) -> Dict[str, Tuple[int, int]]:
    """{method: (covered, held out)} by leave-one-setting-out on normalised points (n, 2) and scores z."""
    X = poly_features(np.asarray(points, float), 2)
    n = len(z)
    out = {m: [0, 0] for m in methods}
    for i in range(n):
        keep = np.arange(n) != i
        b, w = min_norm_fit(X[keep], z[keep])
        pred = float(X[i] @ w + b)
        for m in methods:
            half, used = half_widths(X[keep], z[keep], X[i : i + 1], m, level, [], "")
            if used == "none" or np.isnan(half[0]):
                continue
            out[m][1] += 1
            out[m][0] += int(abs(z[i] - pred) <= half[0])
    return {m: (c, t) for m, (c, t) in out.items()}
