"""The perturbation grammar: string form <-> perturbation, names, severities and result metadata.

Torch-free, like the catalogue entries it reads (:mod:`lmms_ac.robustness.catalogue`, one frozen
dataclass per perturbation in the registry ``PERTURBATIONS``, string-form templates in
:mod:`lmms_ac.robustness.base`): parsing, printing, naming and describing a perturbation never imports
torch, so the results collector, the report, the study files and ``lmms-ac tasks`` do not pay for it.
Torch loads only when a perturbation is applied (its ``apply`` imports its op).
"""

from __future__ import annotations

import re
from typing import Any, List, Optional, Type

from lmms_ac.registry import UnknownEntryError

from .base import Perturbation
from .catalogue import PERTURBATIONS, PatchShuffle, RandomPatchDrop, SalientPatchDrop


class UnknownPerturbationError(UnknownEntryError):
    """A string form whose name is not registered; the message suggests close names."""

    def __init__(self, text: str, stem: str, known: List[str]):
        super().__init__("perturbation", stem, known)
        forms = ", ".join(example_string(PERTURBATIONS.get(n)) for n in known)
        self.message = f"cannot read perturbation {text!r}: {self.message}. Example forms: {forms}"


def example_string(cls: Type[Perturbation]) -> str:
    return cls(**cls.examples[0]).to_string()


def make_perturbation(name: str, **params: Any) -> Perturbation:
    """Build a registered perturbation by name, e.g. ``make_perturbation("pdrop_salient", ratio=0.3)``."""
    cls = PERTURBATIONS.get(name)
    try:
        return cls(**params)
    except TypeError as err:
        fields = [f for f in cls.__dataclass_fields__ if f != "saliency"]
        raise TypeError(f"{name}: {err}; parameters are {', '.join(fields)}") from None


def parse_perturbation(text: str) -> Perturbation:
    """Read a compact string form (``"pdrop_salient30"``, ``"tokgroup_m4_g5_s2"``) back."""
    matches = []
    for name in PERTURBATIONS.names():
        cls = PERTURBATIONS.get(name)
        m = cls.pattern().fullmatch(text)
        if m:
            matches.append(cls.from_match(m))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"ambiguous perturbation {text!r}: {', '.join(type(p).__name__ for p in matches)}")
    prefixed = [n for n in PERTURBATIONS.names() if text.startswith(n)]
    if prefixed:
        name = max(prefixed, key=len)
        cls = PERTURBATIONS.get(name)
        raise ValueError(
            f"malformed {name!r} perturbation {text!r}: expected {cls.form!r} (+ optional '_s<seed>'), "
            f"e.g. {example_string(cls)!r}"
        )
    stem = re.sub(r"(_[a-z])?\d.*$", "", text).rstrip("_") or text
    raise UnknownPerturbationError(text, stem, PERTURBATIONS.names())


def severity(p: Perturbation) -> Optional[float]:
    """The one numeric parameter of a perturbation (``ratio``, ``n``...), else None."""
    numeric = [v for v in p.params.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return numeric[0] if len(numeric) == 1 else None


def severity_unit(p: Perturbation) -> Optional[str]:
    """What the severity measures: the fraction of cells or of attention mass removed, tiles per side..."""
    by = getattr(p, "by", None)
    if isinstance(p, (SalientPatchDrop, RandomPatchDrop)):
        return "fraction of attention mass removed" if by == "mass" else "fraction of cells removed"
    if isinstance(p, PatchShuffle):
        return "tiles per side"
    return None


def perturbation_metadata(p: Perturbation, base_task: str, seed: Optional[int] = None) -> dict:
    """The perturbation block of a result's metadata, the same for a generated task and for a
    perturbation given to the model as an argument: both land in one (perturbation, severity) group.

    ``perturbation`` is the seed-free string form (the seeds of one probe share it), ``form`` the
    one with the seed, ``severity`` the single numeric parameter (PatchDrop: r, the fraction removed)
    and ``severity_unit`` what it measures. ``seed`` overrides the perturbation's own.
    """
    if seed is not None:
        p = p.with_seed(int(seed))
    return {
        "base_task": base_task,
        "perturbation": p.with_seed(0).to_string(),
        "form": p.to_string(),
        "name": p.name,
        "stage": p.stage,
        "params": {
            k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in p.params.items()
        },
        "severity": severity(p),
        "severity_unit": severity_unit(p),
        "seed": int(p.seed),
        "stochastic": bool(p.stochastic),
    }


def robust_task_name(base: str, perturbation: Perturbation) -> str:
    """The task name of a robustness variant: ``"<base>_<string form>"`` (e.g. ``mme_tokperm_s2``)."""
    return f"{base}_{perturbation.to_string()}"
