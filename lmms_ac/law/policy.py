"""The AC policy, one door to its parts (each module has one job):

- ``lmms_ac.law.sampling``: orders that read only (A, C) (region-based sampling, random, rank-by-A);
- ``lmms_ac.law.acquisition``: orders guided by the law fitted on the trained settings (ucb, greedy, thompson);
- ``lmms_ac.law.prior``: the prior policies (the law of other benchmarks as a prior);
- ``lmms_ac.law.recall``: the crediting rule and the anytime / final Recall@n metrics;
- ``lmms_ac.law.simulation``: the simulation driver over a table's benchmarks;
- ``lmms_ac.law.evaluate``: the protocols that hide what a user could not know;
- ``lmms_ac.law.recommend``: the next candidate to train, dispatched through the policy registry
  (``lmms_ac.law.policies``).
"""

from __future__ import annotations

from lmms_ac.law.acquisition import UCB_BETA, UCB_LAMBDA, ucb_orders, ucb_scores  # noqa: F401
from lmms_ac.law.policies import POLICY_REGISTRY, UCB_WARMUP, PolicySpec, policy_names  # noqa: F401
from lmms_ac.law.recall import (  # noqa: F401
    DEFAULT_TOPS,
    METRIC_HELP,
    METRICS,
    RANKING_HELP,
    hits_from_predictions,
    law_hits,
    recall_from_orders,
    recall_metrics,
)
from lmms_ac.law.recommend import Recommendation, recommend  # noqa: F401
from lmms_ac.law.sampling import (  # noqa: F401
    MAX_LEVEL,
    cell_ids,
    normalize_plane,
    random_orders,
    region_next,
    region_orders,
)
from lmms_ac.law.simulation import (  # noqa: F401
    N_LAW_PARAMS,
    PolicyCurve,
    PolicyReport,
    prepare,
    simulate,
    simulate_benchmark,
)
