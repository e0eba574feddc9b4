"""The registry of evaluation protocols for the policies (light: no numpy, so ``lmms-ac --help`` stays fast).

Each protocol names a ``module:function`` that builds its worlds: ``worlds(data, options, rng)`` returns a
list of ``lmms_ac.law.evaluate.World`` (a target benchmark's candidates and scores, plus the sources a
prior policy may learn from). Protocols that need a table (``needs_table``) are skipped without one.
Definitions: docs/METHODS.md#choosing-what-to-train.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, List

from lmms_ac.registry import Registry

#: the policies of the evaluation table: the baselines (random under the same crediting rule, rank-by-A,
#: "fit the law on 2 seeds, then greedy", region) and the others
EVALUATED = ("random-law", "rank-by-a", "greedy", "region", "ucb", "bayes-ucb", "thompson", "prior", "prior-check")
#: synthetic (A, C) cloud shapes and law relations (target vs sources)
SHAPES = ("uniform", "correlated", "clusters")
RELATIONS = ("equal", "related", "independent")


@dataclass(frozen=True)
class ProtocolSpec:
    name: str
    help: str
    worlds: str
    needs_table: bool
    #: counts towards the goal "never more than 0.02 below region" (False: a control or an optimistic reference)
    judged: bool = True

    def worlds_fn(self) -> Callable:
        module, fn = self.worlds.split(":")
        return getattr(importlib.import_module(module), fn)


PROTOCOL_REGISTRY: Registry[ProtocolSpec] = Registry("protocol")
_W = "lmms_ac.law.worlds"
for _spec in (
    ProtocolSpec(
        "leave-family-out",
        "each family of representations in turn is hidden from every prior source (the table's other benchmarks "
        "lose its settings); the target keeps every setting",
        f"{_W}:family_worlds",
        True,
    ),
    ProtocolSpec(
        "family-best-hidden",
        "the leave-family-out worlds whose best setting belongs to the hidden family (new to every source)",
        f"{_W}:family_best_hidden_worlds",
        True,
    ),
    ProtocolSpec(
        "permuted",
        "control: (A, C) shuffled among the target's settings (sources intact); a policy that keeps its recall "
        "here uses names or leaked scores, not (A, C)",
        f"{_W}:permuted_worlds",
        True,
        judged=False,
    ),
    ProtocolSpec(
        "table",
        "reference, optimistic: the table as is, priors from the other benchmarks of the same settings "
        "(leave-benchmark-out; what a user could not know)",
        f"{_W}:table_worlds",
        True,
        judged=False,
    ),
    *(
        ProtocolSpec(
            f"synthetic-{rel}",
            f"synthetic worlds: random (A, C) clouds ({', '.join(SHAPES)}), scores a random quadratic + noise, "
            f"the target's law {rel} to its sources' (sources are other candidates)",
            f"{_W}:synthetic_{rel}_worlds",
            False,
        )
        for rel in RELATIONS
    ),
):
    PROTOCOL_REGISTRY.register(_spec.name, _spec)


def protocol_names() -> List[str]:
    """Protocols in registration order."""
    return list(PROTOCOL_REGISTRY.snapshot())
