"""Recall of a policy: after each training, is the best setting in the top-n of the ranking?

Ranking (``ranking``): ``measured`` (default) ranks trained settings by their measured score and
untrained ones by prediction, so a hit means the best setting was trained or is among the top-n
untrained by prediction (the crediting rule every policy, the random baseline included, is judged
by); ``law`` ranks all k by the prediction, trained ones too (the paper's simulation, where a
prediction can outrank a measurement). Ties in predictions count against the best.

Metrics, both reported: anytime Recall@n at k' (a hit at some step <= k'; with one sample a hit only
if the sample is the best) and final Recall@n at k' (a hit after exactly k' trainings: the paper's
Algorithm 3). The law fit depends only on the *set* of trained settings, so each distinct set of a
step is fitted once (batched).
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np

from lmms_ac.law.linalg import min_norm_fit
from lmms_ac.law.options import RANKINGS
from lmms_ac.law.sampling import law_features

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
DEFAULT_TOPS = (1, 3)


def check_ranking(ranking: str) -> None:
    if ranking not in RANKINGS:
        from lmms_ac.registry import UnknownEntryError

        raise UnknownEntryError("ranking", ranking, list(RANKINGS))


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        from lmms_ac.registry import UnknownEntryError

        raise UnknownEntryError("recall metric", metric, list(METRICS))


def step_sets(orders: np.ndarray, t: int) -> Tuple[np.ndarray, np.ndarray]:
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


def law_predict_sets(points: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The degree-2 law fitted on each row of trained sets ``idx`` (G, t), predicted for all k: (G, k)."""
    X = law_features(points)
    b, w = min_norm_fit(X[idx], y[idx])  # (G,), (G, q)
    return w @ X.T + b[:, None]


def hits_from_predictions(
    orders: np.ndarray,
    y: np.ndarray,
    best: int,
    predict_sets: Callable[[np.ndarray], np.ndarray],
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
    check_ranking(ranking)
    runs, k = orders.shape
    hits = np.zeros((runs, k, len(tops)), dtype=bool)
    hits[:, 0, :] = (orders[:, 0] == best)[:, None]
    tops_arr = np.asarray(tops)
    for t in range(1, k):
        idx, inverse = step_sets(orders, t)
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


def trained_hits(orders: np.ndarray, best: int, n_tops: int) -> np.ndarray:
    """hits[r, s, i] of a policy that ranks nothing: the best setting is among the first s+1 trained."""
    hit = np.logical_or.accumulate(orders == best, axis=1)
    return np.repeat(hit[:, :, None], n_tops, axis=2)


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
    return hits_from_predictions(orders, y, best, lambda idx: law_predict_sets(points, y, idx), tops, ranking)


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

    ``law=True`` scores with the law ranking (region/ucb); ``law=False`` is the old random baseline's
    criterion (the best setting was trained; anytime and final agree).
    """
    if not law:
        trained_best = np.logical_or.accumulate(orders == best, axis=1).mean(axis=0)
        return {top: trained_best.copy() for top in tops}
    return recall_metrics(law_hits(orders, points, y, best, tops, ranking), tops)[metric]
