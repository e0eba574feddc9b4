"""Robustness probes: the perturbation catalogue (one registry), saliency, probe reports, and the
lmms-eval tasks generated from the catalogue (``tasks``: register_probe, register_benchmark,
declare_perturbation_support, perturbation_for_task; ``synthesis``: synthetic images, lazily).

Importing this package imports torch but not transformers (the DINO saliency model loads lazily,
on the first salient/non-salient PatchDrop that needs it).
"""
from .base import STAGES, Perturbation, Stage
from .catalogue import (
    PERTURBATIONS,
    GroupNoise,
    KeepGroup,
    LayerNoise,
    ModalityNoise,
    NonSalientPatchDrop,
    PatchShuffle,
    RandomPatchDrop,
    SalientPatchDrop,
    SyntheticImage,
    TokenPermutation,
    UnknownPerturbationError,
    make_perturbation,
    parse_perturbation,
    robust_task_name,
    split_task_name,
)
from .context import PerturbationContext, stable_seed
from .saliency import CachedSaliency, SaliencyModel, ViTCLSAttention, default_saliency, set_default_saliency
from .tasks import (
    BENCHMARKS,
    declare_perturbation_support,
    perturbation_for_task,
    register_benchmark,
    register_probe,
    register_variants,
)

__all__ = [
    "STAGES", "Stage", "Perturbation", "PerturbationContext", "stable_seed",
    "PERTURBATIONS", "make_perturbation", "parse_perturbation", "robust_task_name", "split_task_name",
    "UnknownPerturbationError",
    "PatchShuffle", "RandomPatchDrop", "SalientPatchDrop", "NonSalientPatchDrop", "SyntheticImage",
    "TokenPermutation", "KeepGroup", "GroupNoise", "LayerNoise", "ModalityNoise",
    "SaliencyModel", "ViTCLSAttention", "CachedSaliency", "default_saliency", "set_default_saliency",
    "BENCHMARKS", "register_probe", "register_benchmark", "register_variants", "declare_perturbation_support",
    "perturbation_for_task",
]
