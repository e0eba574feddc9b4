"""The guard of generated tasks: a perturbed task never runs clean by accident.

A generated task's ``doc_to_visual`` is a :class:`GeneratedVisual` (resolved through the one shim
module of the generated directory). For ``image``/``tokens``/``hidden`` perturbations it returns the
base task's visuals unchanged (the model applies the perturbation through its hooks, see
``lmms_ac.perturb_bridge``) but raises :class:`PerturbationNotSupportedError` unless the model
declared it can (:func:`declare_perturbation_support`, called by ``lmms_ac_llava``); for ``dataset``
perturbations it substitutes the images (``synthetic``: :mod:`lmms_ac.robustness.synthetic_store`)."""

from __future__ import annotations

import inspect
import threading
from typing import Any, Dict, Iterable, Optional

from .base import STAGES, Perturbation
from .grammar import parse_perturbation
from .plugins import ensure_plugins
from .task_cache import load_manifest

#: the stages a model applies itself (every stage but ``dataset``, which swaps the images)
SUPPORTED_STAGES = tuple(s for s in STAGES if s != "dataset")
SHIM_MODULE = "lmms_ac_shim"  #: the one module of a generated directory (written by robustness.generation)


class SupportDeclarations:
    """Which perturbation stages the model of this process applies itself (stage -> model)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stages: Dict[str, str] = {}

    def declare(self, stages: Iterable[str], model: str) -> None:
        stages = list(stages)
        for stage in stages:
            if stage not in SUPPORTED_STAGES:
                raise ValueError(f"unknown perturbation stage {stage!r}; one of {', '.join(SUPPORTED_STAGES)}")
        with self._lock:
            self._stages.update({stage: model for stage in stages})

    def stages(self) -> Dict[str, str]:
        with self._lock:
            return dict(self._stages)

    def clear(self) -> None:
        with self._lock:
            self._stages.clear()


SUPPORT = SupportDeclarations()


def declare_perturbation_support(stages: Iterable[str] = SUPPORTED_STAGES, model: str = "lmms_ac_llava") -> None:
    """Called by a model wrapper that applies image/token/hidden perturbations itself (through
    ``lmms_ac.perturb_bridge``); without it a generated perturbed task refuses to run."""
    SUPPORT.declare(stages, model)


def perturbation_support() -> Dict[str, str]:
    """Stage -> model that declared it (this process)."""
    return SUPPORT.stages()


def reset_perturbation_support() -> None:
    """Forget every declaration (tests)."""
    SUPPORT.clear()


class PerturbationNotSupportedError(RuntimeError):
    """A perturbed task ran on a model that cannot apply the perturbation."""


def check_support(task: str, p: Perturbation) -> None:
    if p.stage == "dataset" or p.stage in SUPPORT.stages():
        return
    raise PerturbationNotSupportedError(
        f"task {task!r} applies the {p.stage}-level perturbation {p.to_string()!r}, which the model itself must "
        f"apply, but the model in use has not declared support for {p.stage} perturbations; running it would "
        f"silently give clean scores. Run it with `--model lmms_ac_llava`, or make your model apply it through "
        f"lmms_ac.perturb_bridge and call lmms_ac.robustness.declare_perturbation_support() in its __init__."
    )


class BaseVisuals:
    """The ``doc_to_visual`` of base task YAMLs, resolved once each per process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fns: Dict[str, Any] = {}

    def get(self, base_yaml: str) -> Any:
        with self._lock:
            if base_yaml not in self._fns:
                from lmms_ac.plugin import load_task_yaml

                self._fns[base_yaml] = load_task_yaml(base_yaml, mode="full").get("doc_to_visual")
            return self._fns[base_yaml]


_BASE_VISUALS = BaseVisuals()


def base_doc_to_visual(base_yaml: str) -> Any:
    """The ``doc_to_visual`` of a base task's YAML (resolved once per process)."""
    return _BASE_VISUALS.get(base_yaml)


def call_doc_to_visual(fn: Any, doc: Any, lmms_eval_specific_kwargs: Any = None) -> Any:
    """Call a task's ``doc_to_visual`` the way lmms-eval's ConfigurableTask does."""
    if isinstance(fn, str):
        return [doc[fn]]
    if callable(fn):
        if lmms_eval_specific_kwargs is not None and len(inspect.signature(fn).parameters) == 2:
            return fn(doc, lmms_eval_specific_kwargs)
        return fn(doc)
    return fn


class GeneratedVisual:
    """``doc_to_visual`` of a generated task: the base task's visuals, guarded (image/tokens/hidden
    stages: the model must have declared support) or substituted (dataset stage)."""

    def __init__(self, task: str, base: str, base_yaml: str, perturbation: str):
        self.task, self.base, self.base_yaml, self.form = task, base, base_yaml, perturbation
        self._p: Optional[Perturbation] = None

    @property
    def perturbation(self) -> Perturbation:
        if self._p is None:
            ensure_plugins()
            self._p = parse_perturbation(self.form)
        return self._p

    def __call__(self, doc, lmms_eval_specific_kwargs=None):
        p = self.perturbation
        check_support(self.task, p)
        visuals = call_doc_to_visual(base_doc_to_visual(self.base_yaml), doc, lmms_eval_specific_kwargs)
        if p.stage != "dataset":
            return visuals
        return dataset_visuals(self.task, self.base, p, visuals, doc)

    def __getstate__(self):
        return {"task": self.task, "base": self.base, "base_yaml": self.base_yaml, "form": self.form, "_p": None}

    def __repr__(self) -> str:
        return f"<lmms_ac doc_to_visual of {self.task}: {self.form!r} on {self.base}>"


def dataset_visuals(task: str, base: str, p: Perturbation, visuals: Any, doc: Any) -> Any:
    """The substituted visuals of a dataset-stage perturbation."""
    if p.name == "synthetic":
        from .synthetic_store import synthetic_visuals

        return synthetic_visuals(base, visuals, seed=p.seed, task=task)
    substitute = getattr(p, "substitute_visuals", None)
    if substitute is None:
        raise NotImplementedError(
            f"dataset-stage perturbation {p.to_string()!r} defines no substitute_visuals(visuals, doc, task)"
        )
    return substitute(visuals, doc, task)


def shim_attribute(name: str, directory: str) -> GeneratedVisual:
    """Resolve ``lmms_ac_shim.<name>`` of the generated directory ``directory``."""
    if not name.startswith("visual__"):
        raise AttributeError(f"module {SHIM_MODULE!r} has no attribute {name!r}")
    task = name[len("visual__") :]
    manifest = load_manifest(directory)
    entry = manifest["tasks"].get(task)
    if entry is None:
        raise AttributeError(f"{SHIM_MODULE}: {task!r} is not a generated task of {directory}")
    base_yaml = manifest["bases"][entry["base"]]["yaml_path"]
    return GeneratedVisual(task, entry["base"], base_yaml, entry["perturbation"])
