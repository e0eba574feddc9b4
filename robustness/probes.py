"""Probe reports as pure functions over score dicts ``{task name: score}`` (higher is better).

* Patch information loss of group g (M x M groups): ``PIL_g = (clean - score_g) / clean`` where
  ``score_g`` is the score of ``<base>_tokgroup_m{M}_g{g}``; arranged as an ``[M, M]`` array
  (row-major group index, ready for a heat map).
* Importance score of a component t: ``I_t = (f(x_t) - max_k f(x_t + z_k)) / f(x_t) * 100`` over
  K seeded noise draws; draw k is the noise perturbation with ``seed=k`` (k = 0..K-1), i.e. the
  tasks ``<base>_toknoise_m4_g5``, ``<base>_toknoise_m4_g5_s1``, ...

The clean score is ``scores[base]``. Task names follow :func:`robust_task_name`.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Union

import numpy as np

from .base import Perturbation
from .catalogue import GroupNoise, KeepGroup
from .grammar import parse_perturbation, robust_task_name

DEFAULT_DRAWS = 10


def _component(component: Union[Perturbation, str]) -> Perturbation:
    p = parse_perturbation(component) if isinstance(component, str) else component
    if not p.stochastic:
        raise ValueError(f"{p.to_string()!r} is deterministic; importance needs a seeded noise perturbation")
    return p


def _lookup(scores: Mapping[str, float], tasks: Sequence[str]) -> List[float]:
    missing = [t for t in tasks if t not in scores]
    if missing:
        raise KeyError(
            f"missing scores for {len(missing)} task(s): {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    return [float(scores[t]) for t in tasks]


def _check_clean(clean: float) -> float:
    clean = float(clean)
    if clean == 0:
        raise ValueError("the clean score is 0: relative losses are undefined")
    return clean


# ---------------------------------------------------------------------------------- task lists
def group_tasks(base: str, m: int, *, seed: int = 0) -> List[str]:
    """The ``m * m`` keep-one-group task names of ``base``, in group order (row-major)."""
    return [robust_task_name(base, KeepGroup(m=m, group=g, seed=seed)) for g in range(m * m)]


def noise_tasks(base: str, component: Union[Perturbation, str], draws: int = DEFAULT_DRAWS) -> List[str]:
    """The ``draws`` seeded noise task names of one component (seeds 0..draws-1)."""
    p = _component(component)
    return [robust_task_name(base, p.with_seed(k)) for k in range(draws)]


def group_noise_tasks(base: str, m: int, draws: int = DEFAULT_DRAWS) -> Dict[int, List[str]]:
    """Group index -> its seeded ``toknoise`` task names (importance of every group)."""
    return {g: noise_tasks(base, GroupNoise(m=m, group=g), draws) for g in range(m * m)}


# ---------------------------------------------------------------------------------- measures
def information_loss(clean: float, score: float) -> float:
    """``(clean - score) / clean``."""
    clean = _check_clean(clean)
    return (clean - float(score)) / clean


def importance_score(clean: float, noisy: Sequence[float]) -> float:
    """``(clean - max(noisy)) / clean * 100``."""
    if len(noisy) == 0:
        raise ValueError("importance needs at least one noisy score")
    clean = _check_clean(clean)
    return (clean - max(float(s) for s in noisy)) / clean * 100.0


def patch_information_loss(scores: Mapping[str, float], base: str, m: int, *, seed: int = 0) -> np.ndarray:
    """``[m, m]`` array of PIL per group from ``scores[base]`` and the keep-one-group scores."""
    clean = _check_clean(_lookup(scores, [base])[0])
    values = _lookup(scores, group_tasks(base, m, seed=seed))
    return np.array([(clean - s) / clean for s in values], dtype=np.float64).reshape(m, m)


def importance(
    scores: Mapping[str, float], base: str, component: Union[Perturbation, str], draws: int = DEFAULT_DRAWS
) -> float:
    """``I_t`` of one component (a noise perturbation, any seed) from the score dict."""
    clean = _lookup(scores, [base])[0]
    return importance_score(clean, _lookup(scores, noise_tasks(base, component, draws)))


def group_importance(scores: Mapping[str, float], base: str, m: int, draws: int = DEFAULT_DRAWS) -> np.ndarray:
    """``[m, m]`` array of ``I_t`` for every token group (``toknoise`` draws)."""
    values = [importance(scores, base, GroupNoise(m=m, group=g), draws) for g in range(m * m)]
    return np.array(values, dtype=np.float64).reshape(m, m)
