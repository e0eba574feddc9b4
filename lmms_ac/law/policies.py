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
    recommend: bool = True
    #: benchmarks the simulation needs (the prior policy learns its prior from the others)
    min_benchmarks: int = 1
    #: trained settings a recommendation needs (UCB samples regions until then)
    min_trained: int = 0

    @property
    def baseline(self) -> bool:
        """Ranks nothing (success only when the best setting was trained): the reference of the others."""
        return self.predict is None

    @staticmethod
    def _resolve(ref: str) -> Callable:
        module, fn = ref.split(":")
        return getattr(importlib.import_module(module), fn)

    def orders_fn(self) -> Callable:
        return self._resolve(self.orders)

    def predict_fn(self) -> Optional[Callable]:
        return self._resolve(self.predict) if self.predict else None


POLICY_REGISTRY: Registry[PolicySpec] = Registry("policy")
_P = "lmms_ac.law.policy"
for _spec in (
    PolicySpec(
        "region",
        "region-based sampling of the (A, C) plane, the law ranks (the paper's policy)",
        f"{_P}:_orders_region",
        f"{_P}:_predict_law",
        "region",
    ),
    PolicySpec(
        "ucb",
        f"region sampling for {UCB_WARMUP} settings, then the upper confidence bound of a Bayesian "
        f"degree-2 law; the law ranks",
        f"{_P}:_orders_ucb",
        f"{_P}:_predict_law",
        "region",
        min_trained=UCB_WARMUP,
    ),
    PolicySpec(
        "prior",
        "the law fitted on the other benchmarks as a prior, Bayesian updating on the target "
        "(expected improvement; never reads untrained scores); the posterior mean ranks",
        f"{_P}:_orders_prior",
        f"{_P}:_predict_prior",
        "prior",
        min_benchmarks=2,
    ),
    PolicySpec(
        "random",
        "train in random order; success when the best setting was trained",
        f"{_P}:_orders_random",
        None,
        "random",
        recommend=False,
    ),
):
    POLICY_REGISTRY.register(_spec.name, _spec)


def policy_names() -> List[str]:
    """Policies in registration order (region, ucb, prior, random)."""
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
