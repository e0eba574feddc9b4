"""``register_probe``: a new probe in one call. It adds the perturbation class to the catalogue AND
its variant family, so every benchmark gets generated tasks (see ADDING_A_PROBE.md)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Type, Union

from .base import INT, Codec, Perturbation
from .catalogue import PERTURBATIONS, register as _catalogue_register
from .guard import SUPPORTED_STAGES
from .variants import VARIANTS, register_variants

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _function_probe(
    fn: Callable, name: str, stage: str, stochastic: bool, form: Optional[str], codecs: Optional[Mapping[str, Codec]]
) -> Type[Perturbation]:
    form = form or name
    slots = re.findall(r"\{(\w+)\}", form)
    codecs = {s: (codecs or {}).get(s, INT) for s in slots}
    if stage == "dataset":
        raise ValueError(
            "a dataset-stage probe substitutes whole images: write a Perturbation subclass with "
            "substitute_visuals(self, visuals, doc, task) and pass the class to register_probe"
        )

    def apply(self, x, ctx):
        return fn(x, ctx, **self.params)

    cls = dataclasses.make_dataclass(
        "".join(part.title() for part in name.split("_")) + "Probe",
        [(s, Any) for s in slots],
        bases=(Perturbation,),
        frozen=True,
        kw_only=True,
        namespace={
            "name": name,
            "stage": stage,
            "stochastic": bool(stochastic),
            "form": form,
            "codecs": codecs,
            "apply": apply,
            "__doc__": fn.__doc__,
            "probe_function": staticmethod(fn),
        },
    )
    cls.__module__ = getattr(fn, "__module__", __name__)
    return cls


def _same_origin(a: Type[Perturbation], b: Type[Perturbation]) -> bool:
    fa, fb = getattr(a, "probe_function", None), getattr(b, "probe_function", None)
    if fa is not None and fb is not None:
        return (fa.__module__, fa.__qualname__) == (fb.__module__, fb.__qualname__)
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register_probe(
    probe: Union[Type[Perturbation], Callable, None] = None,
    *,
    name: Optional[str] = None,
    stage: str = "image",
    stochastic: bool = False,
    form: Optional[str] = None,
    codecs: Optional[Mapping[str, Codec]] = None,
    variants: Optional[Iterable[Mapping[str, Any]]] = None,
    seeds: Optional[int] = None,
    default: bool = True,
    tag_form: Optional[str] = None,
    benchmarks: Optional[Sequence[str]] = None,
    overwrite: bool = False,
):
    """Add a probe to the catalogue AND give every benchmark its variants: after this,
    ``--tasks <base>_<form>`` works (e.g. ``mme_invert``) and :func:`perturbation_for_task` knows it.

    ``probe`` is either a :class:`Perturbation` subclass (its ``name``/``stage``/``form`` are used)
    or a function ``fn(x, ctx, **params) -> x`` with ``name``/``stage``/``stochastic``/``form``
    given here (``form`` slots such as ``"blur{radius}"`` are parameters, integers unless ``codecs``
    says otherwise). ``variants``: parameter dicts to generate (default: the class's ``examples``
    for classes, ``[{}]`` for functions without slots); ``seeds``: seeds per variant (default 5 if
    stochastic, else 1). Usable as a decorator, with or without arguments. Returns ``probe``; a
    function gets the generated class as ``fn.perturbation_class``.
    """
    if probe is None:
        return lambda obj: register_probe(
            obj,
            name=name,
            stage=stage,
            stochastic=stochastic,
            form=form,
            codecs=codecs,
            variants=variants,
            seeds=seeds,
            default=default,
            tag_form=tag_form,
            benchmarks=benchmarks,
            overwrite=overwrite,
        )
    if isinstance(probe, type) and issubclass(probe, Perturbation):
        cls = probe
        default_variants = list(cls.examples)
    elif callable(probe):
        pname = name or getattr(probe, "__name__", "")
        if not _NAME.match(pname or ""):
            raise ValueError(f"probe name {pname!r} must be lower-case letters, digits and '_'")
        if stage not in SUPPORTED_STAGES + ("dataset",):
            raise ValueError(f"unknown stage {stage!r}; one of {', '.join(SUPPORTED_STAGES)}")
        cls = _function_probe(probe, pname, stage, stochastic, form, codecs)
        default_variants = [{}]
        if re.search(r"\{\w+\}", cls.form) and variants is None:
            raise ValueError(f"probe {pname!r} has parameters in its form {cls.form!r}: pass variants=[{{...}}, ...]")
    else:
        raise TypeError(f"register_probe takes a Perturbation subclass or a function, got {probe!r}")
    if not _NAME.match(cls.name or ""):
        raise ValueError(f"probe name {cls.name!r} must be lower-case letters, digits and '_'")
    if cls.stage not in SUPPORTED_STAGES + ("dataset",):
        raise ValueError(f"probe {cls.name!r}: unknown stage {cls.stage!r}")
    if cls.name in PERTURBATIONS:
        if PERTURBATIONS.get(cls.name) is not cls:
            if not (overwrite or _same_origin(PERTURBATIONS.get(cls.name), cls)):
                raise ValueError(
                    f"perturbation {cls.name!r} is already registered (by "
                    f"{PERTURBATIONS.get(cls.name).__module__}); pass overwrite=True to replace it"
                )
            PERTURBATIONS.unregister(cls.name)
            _catalogue_register(cls)
    else:
        _catalogue_register(cls)
    same = cls.name in VARIANTS and _same_origin(PERTURBATIONS.get(VARIANTS.get(cls.name).probe), cls)
    register_variants(
        cls.name,
        cls.name,
        variants if variants is not None else default_variants,
        seeds=seeds,
        default=default,
        tag_form=tag_form,
        benchmarks=benchmarks,
        overwrite=overwrite or same,
    )
    if isinstance(probe, type):
        return probe
    try:
        probe.perturbation_class = cls  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
    return probe
