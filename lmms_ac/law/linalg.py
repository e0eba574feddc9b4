"""Batched least squares for the law: polynomial features, minimum-norm fits, leave-one-out.

Fits use an unpenalised intercept: features and targets are centred on the fitted points and the
slope weights are the minimum-norm least-squares solution of the centred system (``pinv``); the
intercept is ``mean(y) - mean(X) @ w``. With at least as many points as parameters (and full rank)
this is ordinary least squares; while underdetermined it is the minimum-norm solution over the slope
weights, which is what scikit-learn's ``LinearRegression`` on ``PolynomialFeatures`` computes (the
published implementation). Every function accepts leading batch dimensions.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np


def poly_features(x: np.ndarray, degree: int) -> np.ndarray:
    """Polynomial features without the bias column, scikit-learn order.

    ``x`` has shape (..., n, d); degree 1 gives the d inputs, degree 2 adds x_i*x_j for i <= j
    (for (A, C): A, C, A^2, A*C, C^2).
    """
    if degree not in (1, 2):
        raise ValueError(f"degree must be 1 or 2, got {degree}")
    cols = [x[..., i] for i in range(x.shape[-1])]
    if degree == 2:
        d = x.shape[-1]
        cols += [x[..., i] * x[..., j] for i in range(d) for j in range(i, d)]
    return np.stack(cols, axis=-1)


def poly_terms(names: List[str], degree: int) -> List[str]:
    """Names of the columns of ``poly_features`` (e.g. ['A', 'C', 'A^2', 'A*C', 'C^2'])."""
    terms = list(names)
    if degree == 2:
        d = len(names)
        terms += [f"{names[i]}^2" if i == j else f"{names[i]}*{names[j]}" for i in range(d) for j in range(i, d)]
    return terms


def min_norm_fit(X: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Fit ``y ~ b + X @ w`` (intercept free, minimum-norm ``w``). Shapes (..., n, q), (..., n).

    Returns ``(b, w)`` with shapes (...,) and (..., q).
    """
    xm = X.mean(axis=-2, keepdims=True)
    ym = y.mean(axis=-1, keepdims=True)
    w = np.einsum("...qn,...n->...q", np.linalg.pinv(X - xm), y - ym)
    b = ym[..., 0] - np.einsum("...q,...q->...", xm[..., 0, :], w)
    return b, w


def predict(X: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``b + X @ w`` with batch dimensions: X (..., m, q), b (...,), w (..., q) -> (..., m)."""
    return np.einsum("...mq,...q->...m", X, w) + b[..., None]


def r2(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """Coefficient of determination 1 - SS_res / SS_tot over the last axis (NaN if y is constant)."""
    ss_res = ((y - yhat) ** 2).sum(axis=-1)
    ss_tot = ((y - y.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)


def loo_predictions(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-out predictions: the fit on all points but i, evaluated at point i.

    Shapes (..., n, q), (..., n) -> (..., n). Uses the hat-matrix shortcut e_i / (1 - h_ii) where the
    leave-one-out systems stay full-rank, and explicit batched refits elsewhere.
    """
    n, q = X.shape[-2], X.shape[-1]
    batch = X.shape[:-2]
    Xb = X.reshape((-1, n, q))
    yb = y.reshape((-1, n))
    out = np.empty_like(yb)
    todo = np.ones(Xb.shape[0], dtype=bool)
    if n - 1 >= q + 1:
        Xf = np.concatenate([np.ones(Xb.shape[:-1] + (1,)), Xb], axis=-1)
        pinv = np.linalg.pinv(Xf)  # (B, q+1, n)
        h = np.einsum("bnq,bqn->bn", Xf, pinv)
        beta = np.einsum("bqn,bn->bq", pinv, yb)
        resid = yb - np.einsum("bnq,bq->bn", Xf, beta)
        ranks = np.linalg.matrix_rank(Xf)
        ok = (ranks == q + 1) & np.all(1.0 - h > 1e-8, axis=-1)
        out[ok] = yb[ok] - resid[ok] / (1.0 - h[ok])
        todo = ~ok
    if todo.any():
        idx = np.array([[j for j in range(n) if j != i] for i in range(n)])  # (n, n-1)
        Xl = Xb[todo][:, idx]  # (B', n, n-1, q)
        yl = yb[todo][:, idx]
        b, w = min_norm_fit(Xl, yl)
        out[todo] = np.einsum("bnq,bnq->bn", Xb[todo], w) + b
    return out.reshape(batch + (n,))
