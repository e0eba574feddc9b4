"""The registry of AC policies (light: no numpy, so ``lmms-ac --help`` stays fast).

Each entry names the functions that implement it as ``module:function`` strings, resolved when a
policy runs: ``orders(ctx) -> (runs, k)`` training orders and ``predict(ctx, idx) -> (G, k)``
predictions that rank the settings for Recall (``None``: success only when the best setting was
trained). Argparse choices and ``simulate``/``recommend`` all read this registry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, List, Optional

from lmms_ac.registry import Registry

UCB_WARMUP = 4


@dataclass(frozen=True)
class PolicySpec:
    name: str
    help: str
    orders: str
    predict: Optional[str]
    rng_stream: str
    #: ``module:function`` choosing the next candidate for ``recommend`` (None: not offered there)
    next: Optional[str] = None
    #: benchmarks the simulation needs (the prior policies learn their prior from the others)
    min_benchmarks: int = 1
    #: trained settings a recommendation needs (UCB samples regions until then)
    min_trained: int = 0

    @property
    def recommend(self) -> bool:
        return self.next is not None

    @property
    def baseline(self) -> bool:
        """Ranks nothing (success only when the best setting was trained): the reference of the others."""
        return self.predict is None

    @property
    def uses_prior(self) -> bool:
        """Learns from other benchmarks (a prior law) besides the target's own trained settings."""
        return self.min_benchmarks > 1

    @staticmethod
    def _resolve(ref: str) -> Callable:
        module, fn = ref.split(":")
        return getattr(importlib.import_module(module), fn)

    def orders_fn(self) -> Callable:
        return self._resolve(self.orders)

    def predict_fn(self) -> Optional[Callable]:
        return self._resolve(self.predict) if self.predict else None

    def next_fn(self) -> Callable:
        if self.next is None:
            raise ValueError(f"policy {self.name!r} does not recommend (it is a baseline of the simulation only)")
        return self._resolve(self.next)


POLICY_REGISTRY: Registry[PolicySpec] = Registry("policy")
_P = "lmms_ac.law.simulation"
_R = "lmms_ac.law.recommend"
for _spec in (
    PolicySpec(
        "region",
        "region-based sampling of the (A, C) plane, the law ranks (the paper's policy)",
        f"{_P}:orders_region",
        f"{_P}:predict_law",
        "region",
        f"{_R}:next_region",
    ),
    PolicySpec(
        "ucb",
        f"region sampling for {UCB_WARMUP} settings, then the upper confidence bound of a Bayesian "
        f"degree-2 law; the law ranks",
        f"{_P}:orders_ucb",
        f"{_P}:predict_law",
        "region",
        f"{_R}:next_ucb",
        min_trained=UCB_WARMUP,
    ),
    PolicySpec(
        "bayes-ucb",
        "one region-sampled setting, then the upper confidence bound (mean + 2 std) of a Bayesian degree-2 law "
        "(ridge posterior, the ucb policy's model) from the second training on; its posterior mean ranks",
        f"{_P}:orders_bayes_ucb",
        f"{_P}:predict_bayes",
        "region",
        f"{_R}:next_bayes_ucb",
    ),
    PolicySpec(
        "thompson",
        f"region sampling for {UCB_WARMUP} settings, then Thompson sampling: the best candidate of one draw "
        "of the Bayesian degree-2 law; the law ranks",
        f"{_P}:orders_thompson",
        f"{_P}:predict_law",
        "region",
        f"{_R}:next_thompson",
        min_trained=UCB_WARMUP,
    ),
    PolicySpec(
        "greedy",
        "fit the law on 2 region-sampled seeds, then train its predicted best untrained candidate; the law ranks",
        f"{_P}:orders_greedy",
        f"{_P}:predict_law",
        "region",
        f"{_R}:next_greedy",
        min_trained=2,
    ),
    PolicySpec(
        "rank-by-a",
        "train in order of decreasing A; untrained candidates rank by A",
        f"{_P}:orders_rank_by_a",
        f"{_P}:predict_a",
        "rank-by-a",
        f"{_R}:next_rank_by_a",
    ),
    PolicySpec(
        "prior",
        "the law fitted on other benchmarks as a prior, Bayesian updating on the target "
        "(expected improvement; never reads untrained scores); the posterior mean ranks",
        f"{_P}:orders_prior",
        f"{_P}:predict_prior",
        "prior",
        f"{_R}:next_prior",
        min_benchmarks=2,
    ),
    PolicySpec(
        "prior-check",
        "the prior policy while the trained settings agree with the prior (the better of 2 is the one it ranks "
        "higher; Spearman >= 0.7 from 3 on), else the law fitted on the trained alone (linear below 7): its best",
        f"{_P}:orders_prior_check",
        f"{_P}:predict_prior_check",
        "prior",
        f"{_R}:next_prior_check",
        min_benchmarks=2,
    ),
    PolicySpec(
        "random-law",
        "train in random order; the law ranks (chance under the crediting rule of every other policy)",
        f"{_P}:orders_random",
        f"{_P}:predict_law",
        "random",
    ),
    PolicySpec(
        "random",
        "train in random order; success when the best setting was trained",
        f"{_P}:orders_random",
        None,
        "random",
    ),
):
    POLICY_REGISTRY.register(_spec.name, _spec)

#: what ``policy recommend`` uses unless told otherwise: the policy ``policy evaluate`` found above region on
#: every judged protocol (final Recall@3 at k' = 4 on law-v1 and 1800 synthetic worlds; README "Judging a
#: policy"). Change it only with a new evaluation that shows another policy ahead on all of them.
DEFAULT_POLICY = "bayes-ucb"


def policy_names() -> List[str]:
    """Policies in registration order."""
    return list(POLICY_REGISTRY.snapshot())


def recommend_policy_names() -> List[str]:
    return [n for n in policy_names() if POLICY_REGISTRY.get(n).recommend]


def simulable_policies(n_benchmarks: int, names: Optional[List[str]] = None) -> List[str]:
    """``names`` (default: all) that can be simulated on ``n_benchmarks`` benchmarks, in registration order."""
    names = policy_names() if names is None else names
    return [n for n in names if POLICY_REGISTRY.get(n).min_benchmarks <= n_benchmarks]


def recommendable_policies(n_trained: int, n_benchmarks: int = 1) -> List[str]:
    """Policies that can recommend the next setting with ``n_trained`` trained settings on ``n_benchmarks``."""
    return [
        n
        for n in recommend_policy_names()
        if POLICY_REGISTRY.get(n).min_trained <= n_trained and POLICY_REGISTRY.get(n).min_benchmarks <= n_benchmarks
    ]
