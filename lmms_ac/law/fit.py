"""Fitting the law Z ~ f(A, C) per benchmark and reporting how well it explains the scores.

For every benchmark eight least-squares models are fitted (docs/METHODS.md#the-law):
inputs ``random`` (two uniform random features, averaged over seeded draws), ``A``, ``C`` and
``AC``, each ``linear`` (degree 1) or ``poly2`` (degree 2; ``AC_poly2`` has the 6 weights of the
law). For each: in-sample R² (1 - SS_res/SS_tot), leave-one-out R² (1 - PRESS/SS_tot, SS_tot about
the mean of all points) and the Spearman rank correlation of score vs in-sample and vs leave-one-out
predictions. R² values are averaged over the vision and OCR benchmark groups.

``normalize="minmax"`` min-max normalises A, C and the score over the scored settings of the
benchmark first (the published practice; R² of the full polynomial models does not change, the
coefficients do). Settings without a score are predicted by ``AC_poly2`` with an interval:
``interval="ols"`` is the classical OLS prediction interval (Student t, residual variance
RSS/(n-p)); ``interval="loo"`` is a jackknife interval, prediction ± the ceil((n+1)·level)-th
smallest absolute leave-one-out residual; ``interval="conformal"`` a studentised jackknife (see
``lmms_ac.law.intervals``). When there are not more points than parameters the OLS interval is
undefined and the LOO interval is used. Intervals are in the score's own units. Each method's coverage
is measured by leave-one-setting-out on the benchmark's scored settings (``BenchmarkFit.coverage``).

Fewer points than parameters: a warning and the minimum-norm solution (see ``linalg``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
from loguru import logger

from lmms_ac.law.data import BenchmarkData, canonical_benchmark, group_members
from lmms_ac.law.options import INTERVALS, NORMALIZATIONS  # noqa: F401 (re-exported)
from lmms_ac.law.intervals import coverage, half_widths
from lmms_ac.law.linalg import loo_predictions, min_norm_fit, poly_features, poly_terms, predict, r2

FEATURE_SETS = ("random", "A", "C", "AC")
DEGREES = {"linear": 1, "poly2": 2}
#: the law itself
LAW_MODEL = "AC_poly2"
MODEL_NAMES = [f"{f}_{d}" for f in FEATURE_SETS for d in DEGREES]


@dataclass(frozen=True)
class MinMax:
    """x -> (x - lo) / (hi - lo); a constant column maps to 0."""

    lo: float
    hi: float

    @classmethod
    def of(cls, x: np.ndarray) -> "MinMax":
        return cls(float(np.min(x)), float(np.max(x)))

    @property
    def scale(self) -> float:
        return self.hi - self.lo if self.hi > self.lo else 1.0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, float) - self.lo) / self.scale

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, float) * self.scale + self.lo


IDENTITY = MinMax(0.0, 1.0)


@dataclass
class ModelFit:
    """One least-squares model on one benchmark (in the normalised space if normalisation is on)."""

    name: str
    terms: List[str]
    intercept: float
    coef: List[float]
    r2: float
    r2_loo: float
    spearman: float
    spearman_loo: float
    n_params: int
    underdetermined: bool
    draws: int = 1  # > 1 for the random baseline (values are means over draws)

    def to_dict(self) -> Dict[str, object]:
        d = {
            "r2": self.r2,
            "r2_loo": self.r2_loo,
            "spearman": self.spearman,
            "spearman_loo": self.spearman_loo,
            "n_params": self.n_params,
            "underdetermined": self.underdetermined,
        }
        if self.draws > 1:
            d["draws"] = self.draws
        else:
            d["terms"] = ["1"] + self.terms
            d["coef"] = [self.intercept] + self.coef
        return d


@dataclass
class BenchmarkFit:
    """All models of one benchmark, the normalisation used and the law's predictions."""

    benchmark: str
    n: int
    models: Dict[str, ModelFit]
    norm: Dict[str, MinMax]
    predictions: pd.DataFrame
    warnings: List[str] = field(default_factory=list)
    #: {interval method: (held-out settings covered, held out)}, leave-one-setting-out (``intervals.coverage``)
    coverage: Dict[str, tuple] = field(default_factory=dict)

    def law_predict(self, A: np.ndarray, C: np.ndarray) -> np.ndarray:
        """The law (``AC_poly2``) at raw (A, C), in raw score units."""
        m = self.models[LAW_MODEL]
        x = np.stack([self.norm["A"](A), self.norm["C"](C)], axis=-1)
        z = poly_features(x, 2) @ np.asarray(m.coef) + m.intercept
        return self.norm["score"].inverse(z)


@dataclass
class LawReport:
    """Fits of every benchmark plus group means and the options that produced them."""

    benchmarks: Dict[str, BenchmarkFit]
    groups: Dict[str, Dict[str, Dict[str, float]]]
    options: Dict[str, object]

    def r2_frame(self) -> pd.DataFrame:
        """Long frame: benchmark (or group:<name>), model, r2, r2_loo, spearman, spearman_loo."""
        rows = []
        for b, bf in self.benchmarks.items():
            for name, m in bf.models.items():
                rows.append(
                    {
                        "benchmark": b,
                        "model": name,
                        "n": bf.n,
                        "r2": m.r2,
                        "r2_loo": m.r2_loo,
                        "spearman": m.spearman,
                        "spearman_loo": m.spearman_loo,
                    }
                )
        for g, models in self.groups.items():
            for name, vals in models.items():
                rows.append(
                    {
                        "benchmark": f"group:{g}",
                        "model": name,
                        "n": vals.get("n_benchmarks"),
                        **{k: vals[k] for k in ("r2", "r2_loo", "spearman", "spearman_loo")},
                    }
                )
        return pd.DataFrame(rows)

    def coef_frame(self) -> pd.DataFrame:
        """Coefficients of every non-random model with the normalisation needed to apply them."""
        rows = []
        for b, bf in self.benchmarks.items():
            for name, m in bf.models.items():
                if name.startswith("random"):
                    continue
                for term, c in zip(["1"] + m.terms, [m.intercept] + m.coef):
                    rows.append(
                        {
                            "benchmark": b,
                            "model": name,
                            "term": term,
                            "coef": c,
                            "normalize": self.options.get("normalize"),
                            "A_min": bf.norm["A"].lo,
                            "A_max": bf.norm["A"].hi,
                            "C_min": bf.norm["C"].lo,
                            "C_max": bf.norm["C"].hi,
                            "score_min": bf.norm["score"].lo,
                            "score_max": bf.norm["score"].hi,
                        }
                    )
        return pd.DataFrame(rows)

    def coverage_frame(self) -> pd.DataFrame:
        """Coverage of the law's intervals by leave-one-setting-out: benchmark (and 'all'), method, covered,
        held_out, coverage, level."""
        rows = [
            {"benchmark": b, "method": m, "covered": c, "held_out": t}
            for b, bf in self.benchmarks.items()
            for m, (c, t) in bf.coverage.items()
        ]
        df = pd.DataFrame(rows, columns=["benchmark", "method", "covered", "held_out"])
        if len(df):
            tot = df.groupby("method", as_index=False, sort=False)[["covered", "held_out"]].sum()
            tot.insert(0, "benchmark", "all")
            df = pd.concat([df, tot], ignore_index=True)
        df["coverage"] = df["covered"] / df["held_out"].where(df["held_out"] > 0)
        df["level"] = self.options.get("level")
        return df

    def prediction_frame(self) -> pd.DataFrame:
        frames = [bf.predictions.assign(benchmark=b) for b, bf in self.benchmarks.items()]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        cols = ["benchmark"] + [c for c in df.columns if c != "benchmark"]
        return df[cols]

    def to_dict(self) -> Dict[str, object]:
        """A JSON-serialisable document of every R² reported (NaN -> None)."""
        doc = {
            "options": self.options,
            "benchmarks": {
                b: {
                    "n": bf.n,
                    "models": {k: m.to_dict() for k, m in bf.models.items()},
                    "normalization": {k: {"min": v.lo, "max": v.hi} for k, v in bf.norm.items()},
                    "warnings": bf.warnings,
                    "predictions": bf.predictions[~bf.predictions["scored"]].to_dict("records"),
                    "coverage": {m: {"covered": c, "held_out": t} for m, (c, t) in bf.coverage.items()},
                }
                for b, bf in self.benchmarks.items()
            },
            "groups": self.groups,
            "coverage": self.coverage_frame().query("benchmark == 'all'").to_dict("records"),
        }
        return clean_json(doc)


def clean_json(obj):
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) over the last axis; O(n²), meant for the few settings of a law fit."""
    x = np.asarray(x, float)
    less = (x[..., None, :] < x[..., :, None]).sum(-1)
    equal = (x[..., None, :] == x[..., :, None]).sum(-1)
    return less + (equal + 1) / 2.0


def _spearman(y: np.ndarray, yhat: np.ndarray) -> np.ndarray:
    """Spearman correlation over the last axis (average ranks for ties; NaN if constant)."""
    ry, rh = _rankdata(y), _rankdata(yhat)
    ry = ry - ry.mean(-1, keepdims=True)
    rh = rh - rh.mean(-1, keepdims=True)
    den = np.sqrt((ry**2).sum(-1) * (rh**2).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (ry * rh).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def _inputs(features: str, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    return {"A": a[:, None], "C": c[:, None], "AC": np.stack([a, c], axis=-1)}[features]


def _fit_one(name: str, X: np.ndarray, y: np.ndarray, terms: List[str]) -> ModelFit:
    b, w = min_norm_fit(X, y)
    yhat = predict(X, b, w)
    loo = loo_predictions(X, y)
    n, q = X.shape
    return ModelFit(
        name,
        terms,
        float(b),
        [float(v) for v in w],
        float(r2(y, yhat)),
        float(r2(y, loo)),
        float(_spearman(y, yhat)),
        float(_spearman(y, loo)),
        q + 1,
        n < q + 1,
    )


def _fit_random(name: str, degree: int, y: np.ndarray, draws: int, rng: np.random.Generator) -> ModelFit:
    n = y.shape[0]
    X = poly_features(rng.random((draws, n, 2)), degree)  # (D, n, q)
    Y = np.broadcast_to(y, (draws, n))
    b, w = min_norm_fit(X, Y)
    yhat = predict(X, b, w)
    loo = loo_predictions(X, Y)
    q = X.shape[-1]
    with warnings.catch_warnings():  # a constant score gives all-NaN R² (already warned about)
        warnings.simplefilter("ignore", RuntimeWarning)
        vals = [float(np.nanmean(v)) for v in (r2(Y, yhat), r2(Y, loo), _spearman(Y, yhat), _spearman(Y, loo))]
    return ModelFit(name, poly_terms(["R1", "R2"], degree), float("nan"), [], *vals, q + 1, n < q + 1, draws=draws)


def fit_benchmark(
    data: BenchmarkData,
    *,
    normalize: str = "none",
    random_draws: int = 100,
    seed: int = 0,
    interval: str = "ols",
    level: float = 0.9,
) -> BenchmarkFit:
    """Fit the eight models of ``MODEL_NAMES`` on the scored settings of one benchmark."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; choose one of {', '.join(INTERVALS)}")
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    mask = data.scored
    n = int(mask.sum())
    if n < 2:
        raise ValueError(
            f"benchmark {data.benchmark!r} has {n} scored setting(s); the law needs at least 2 "
            f"(collect more results or drop the benchmark)."
        )
    A, C, y = data.A[mask], data.C[mask], data.score[mask]
    if normalize == "minmax":
        norm = {"A": MinMax.of(A), "C": MinMax.of(C), "score": MinMax.of(y)}
    else:
        norm = {"A": IDENTITY, "C": IDENTITY, "score": IDENTITY}
    a, c, z = norm["A"](A), norm["C"](C), norm["score"](y)
    warns: List[str] = []
    if not mask.all():
        missing = [s for s, m in zip(data.settings, mask) if not m]
        warns.append(f"{data.benchmark}: no score for {', '.join(missing)}; left out of the fit (predicted instead)")
    if np.ptp(z) == 0:
        warns.append(f"{data.benchmark}: every scored setting has the same score; R² is undefined")
    for arr, what in ((A, "A"), (C, "C")):
        if np.ptp(arr) == 0:
            warns.append(
                f"{data.benchmark}: every scored setting has the same {what} ({arr[0]:g}); the law "
                f"cannot use {what} and the models with it are underdetermined"
            )
    rng = np.random.default_rng([seed, _stable_hash(data.benchmark)])
    models: Dict[str, ModelFit] = {}
    for feats in FEATURE_SETS:
        for dname, degree in DEGREES.items():
            name = f"{feats}_{dname}"
            if feats == "random":
                m = _fit_random(name, degree, z, random_draws, rng)
            else:
                X = poly_features(_inputs(feats, a, c), degree)
                m = _fit_one(name, X, z, poly_terms(list(feats), degree))
            if m.underdetermined:
                warns.append(
                    f"{data.benchmark}: {n} scored settings for {m.n_params} parameters of {name}; "
                    f"underdetermined, using minimum-norm least squares (in-sample R² is meaningless)"
                )
            elif n == m.n_params and not feats == "random":
                warns.append(
                    f"{data.benchmark}: {n} scored settings for the {m.n_params} parameters of {name}: it "
                    f"passes through every point, R² = 1 by construction (see the leave-one-out R²)"
                )
            models[name] = m
    for w in warns:
        logger.warning(w)

    # the law's predictions for every setting (fitted, leave-one-out, and intervals for unscored ones)
    law = models[LAW_MODEL]
    Xs = poly_features(np.stack([a, c], axis=-1), 2)
    X_all = poly_features(np.stack([norm["A"](data.A), norm["C"](data.C)], axis=-1), 2)
    w = np.asarray(law.coef)
    z_all = X_all @ w + law.intercept
    loo = loo_predictions(Xs, z)
    if (~mask).any():  # intervals only for settings that are predicted
        before = len(warns)
        half, method = half_widths(Xs, z, X_all, interval, level, warns, data.benchmark)
        for msg in warns[before:]:
            logger.warning(msg)
    else:
        half, method = np.full(len(data.settings), np.nan), "none"
    pred = norm["score"].inverse(z_all)
    half_raw = half * norm["score"].scale
    loo_all = np.full(len(data.settings), np.nan)
    loo_all[mask] = norm["score"].inverse(loo)
    predictions = pd.DataFrame(
        {
            "setting": list(data.settings),
            "A": data.A,
            "C": data.C,
            "score": data.score,
            "scored": mask,
            "pred": pred,
            "pred_loo": loo_all,
            "lo": pred - half_raw,
            "hi": pred + half_raw,
            "interval": method,
            "level": level,
        }
    )
    cover = coverage(np.stack([a, c], axis=-1), z, level) if n >= 4 else {}
    return BenchmarkFit(data.benchmark, n, models, norm, predictions, warns, cover)


def law_predictions(data: BenchmarkData, normalize: str = "minmax") -> np.ndarray:
    """The law (``AC_poly2``) fitted on the scored settings, predicted for every setting (raw units).

    Only the law is fitted (no baselines, no leave-one-out); underdetermined fits warn once.
    """
    mask = data.scored
    n = int(mask.sum())
    if n < 2:
        raise ValueError(f"benchmark {data.benchmark!r} has {n} scored setting(s); the law needs at least 2")
    if normalize == "minmax":
        na, nc, ny = MinMax.of(data.A[mask]), MinMax.of(data.C[mask]), MinMax.of(data.score[mask])
    else:
        na = nc = ny = IDENTITY
    X = poly_features(np.stack([na(data.A), nc(data.C)], axis=-1), 2)
    if n < X.shape[1] + 1:
        logger.warning(
            f"{data.benchmark}: {n} scored settings for {X.shape[1] + 1} parameters of the law; "
            f"minimum-norm least squares, predictions are tentative"
        )
    b, w = min_norm_fit(X[mask], ny(data.score[mask]))
    return ny.inverse(X @ w + b)


def _stable_hash(name: str) -> int:
    import zlib

    return zlib.crc32(name.encode())


def group_means(
    fits: Dict[str, BenchmarkFit], groups: Optional[Dict[str, Sequence[str]]] = None
) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Mean R²/LOO R²/Spearman per model over each group's benchmarks that were fitted.

    Benchmarks are recognised under their lmms-eval task names and the papers' names (MMBench, MME,
    OKVQA, SEED, MMMU, TextVQA, VizWiz, ScienceQA: ``Benchmark.aliases`` in ``lmms_ac.benchmarks``);
    ``groups`` defaults to the law paper's (``lmms_ac.benchmarks.law_groups``).
    """
    if groups is None:
        from lmms_ac.benchmarks import law_groups

        groups = law_groups()
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    found = group_members(list(fits), groups)
    for g, members in groups.items():
        present = found[g]
        if not present:
            continue
        out[g] = {}
        for name in MODEL_NAMES:
            vals = {
                k: float(np.nanmean([getattr(fits[b].models[name], k) for b in present]))
                if any(not math.isnan(getattr(fits[b].models[name], k)) for b in present)
                else float("nan")
                for k in ("r2", "r2_loo", "spearman", "spearman_loo")
            }
            vals["n_benchmarks"] = len(present)
            vals["complete"] = {canonical_benchmark(b) or b for b in present} >= set(members)
            out[g][name] = vals
    return out


def fit_law(
    data: Dict[str, BenchmarkData],
    *,
    normalize: str = "none",
    random_draws: int = 100,
    seed: int = 0,
    interval: str = "ols",
    level: float = 0.9,
) -> LawReport:
    """Fit every benchmark and average over the vision / OCR groups."""
    if not data:
        raise ValueError("no benchmarks to fit; pass --benchmarks or check the input table")
    fits = {
        b: fit_benchmark(d, normalize=normalize, random_draws=random_draws, seed=seed, interval=interval, level=level)
        for b, d in data.items()
    }
    options = {
        "normalize": normalize,
        "random_draws": random_draws,
        "seed": seed,
        "interval": interval,
        "level": level,
        "law": LAW_MODEL,
        "r2": "in-sample 1 - SS_res/SS_tot; r2_loo = 1 - PRESS/SS_tot",
        "coverage": "share of scored settings inside the interval of the law fitted without them "
        "(leave-one-setting-out), per interval method",
    }
    return LawReport(fits, group_means(fits), options)
