"""Fit + a 1000-run policy simulation over the 8 benchmarks of the bundled law-v1 data, against the
plain scikit-learn loop a user would write, side by side in one run.

lmms-ac: ``fit_law`` (every R² of the report) and ``simulate`` (region + random, 1000 seeded runs per
benchmark; the law refit at every step of every run, batched over the distinct sample sets).
scikit-learn: the same region-sampling orders, and at every step of every run
``LinearRegression().fit(PolynomialFeatures(2).fit_transform(...))``; its Recall@3 must equal ours.

    python bench/bench_law.py [--runs 1000] [--sklearn-runs 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def sklearn_recall(points: np.ndarray, y: np.ndarray, best: int, orders: np.ndarray, top: int = 3) -> np.ndarray:
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import PolynomialFeatures

    feats = PolynomialFeatures(2, include_bias=False).fit_transform(points)
    runs, k = orders.shape
    success = np.zeros((runs, k), dtype=bool)
    for r in range(runs):
        hit = orders[r, 0] == best
        success[r, 0] = hit
        for t in range(1, k):
            if not hit:
                idx = orders[r, : t + 1]
                pred = LinearRegression().fit(feats[idx], y[idx]).predict(feats)
                hit = int((pred >= pred[best]).sum()) - 1 < top
            success[r, t] = hit
    return success.mean(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--sklearn-runs", type=int, default=1000, help="runs of the scikit-learn loop (same seeds)")
    args = parser.parse_args()

    from lmms_ac.law.data import load_example
    from lmms_ac.law.fit import fit_law
    from lmms_ac.law.sampling import region_orders, seed_sequence
    from lmms_ac.law.simulation import prepare, simulate

    data = load_example("law-v1")
    fit_law(data, normalize="minmax")  # warm-up (imports, first calls)
    start = time.perf_counter()
    report = fit_law(data, normalize="minmax")
    sim = simulate(data, ("region", "random"), runs=args.runs, ranking="law")  # the paper's ranking, as sklearn below
    ours = time.perf_counter() - start
    print(
        f"lmms-ac: fit ({len(report.benchmarks)} benchmarks) + policy simulation ({args.runs} runs x {len(data)} "
        "benchmarks, "
        f"region + random): {ours:.3f} s  (target < 2 s)"
    )

    start = time.perf_counter()
    max_diff = 0.0
    for name, d in data.items():
        _, points, y, best = prepare(d)
        orders = region_orders(points, args.runs, np.random.default_rng(seed_sequence(0, name, "region")))
        orders = orders[: args.sklearn_runs]
        theirs = sklearn_recall(points, y, best, orders)
        if args.sklearn_runs == args.runs:
            mine = next(c for c in sim.curves if c.benchmark == name and c.policy == "region").recall[3]
            max_diff = max(max_diff, float(np.abs(mine - theirs).max()))
    sk = (time.perf_counter() - start) * args.runs / args.sklearn_runs
    note = "" if args.sklearn_runs == args.runs else f" (measured on {args.sklearn_runs} runs, scaled to {args.runs})"
    print(f"scikit-learn loop, region policy only (no fit report, no random baseline): {sk:.2f} s{note}")
    print(f"ratio: lmms-ac is {sk / ours:.1f}x faster")
    if args.sklearn_runs == args.runs:
        print(f"largest Recall@3 difference between the two: {max_diff:.2e}")


if __name__ == "__main__":
    main()
