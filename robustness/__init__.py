"""Robustness probes: the perturbation catalogue (one registry), saliency, probe reports, and the
lmms-eval tasks generated from the catalogue (``tasks``: register_probe, register_benchmark,
declare_perturbation_support, perturbation_for_task; ``synthesis``: the synthetic-image generator,
``synthetic_store``: its images at evaluation time).

The names below are re-exported lazily (PEP 562): ``import lmms_ac.robustness`` costs nothing, and
torch loads only with the first name that needs it (the grammar, ``grammar``, and the catalogue
entries, ``catalogue``, are torch-free; applying a perturbation imports torch), so ``lmms-ac --help``
stays fast. transformers loads
only with the DINO saliency model, on the first salient/non-salient PatchDrop that needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    ".base": ("Perturbation",),
    ".stages": ("STAGES", "Stage"),
    ".catalogue": (
        "PERTURBATIONS",
        "GlobalTokenPermutation",
        "GroupNoise",
        "KeepGroup",
        "LayerNoise",
        "ModalityNoise",
        "NonSalientPatchDrop",
        "PatchShuffle",
        "RandomPatchDrop",
        "SalientPatchDrop",
        "SyntheticImage",
        "TokenPermutation",
    ),
    ".grammar": ("UnknownPerturbationError", "make_perturbation", "parse_perturbation", "robust_task_name"),
    ".context": ("PerturbationContext", "stable_seed"),
    ".saliency": ("CachedSaliency", "SaliencyModel", "ViTCLSAttention", "default_saliency", "set_default_saliency"),
    ".tasks": (
        "BENCHMARKS",
        "declare_perturbation_support",
        "perturbation_for_task",
        "register_benchmark",
        "register_probe",
        "register_variants",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
