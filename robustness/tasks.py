"""Robustness variants of lmms-eval tasks, generated from the perturbation catalogue.

Nothing here is a hand-copied YAML. Three small tables drive everything:

* ``BENCHMARKS`` (below): the benchmarks of both studies, each mapped to ONE lmms-eval 0.7.3 task
  (a single task, never a group); extra bases come from :func:`register_benchmark`.
* ``PERTURBATIONS`` (``lmms_ac.robustness.catalogue``): what a perturbation does.
* ``VARIANTS``: which perturbations (parameters x seeds) every benchmark gets, one *family* per
  probe; :func:`register_probe` adds a catalogue entry and its family in one call.

Task names and tags
-------------------
A variant task is ``<base>_<form>``: the base lmms-eval task name and the catalogue's string form
(:func:`~lmms_ac.robustness.catalogue.robust_task_name`), seed 0 without suffix and seed k as
``_s<k>``. Examples: ``mme_tokperm``, ``mme_tokperm_s3``, ``seed_patchshuffle4``,
``mmbench_en_dev_pdrop_salient30``, ``ok_vqa_val2014_tokgroup_m4_g5``, ``ai2d_synthetic``. These are
exactly the names :mod:`lmms_ac.robustness.probes` expects (``group_tasks``, ``noise_tasks``).

Tags (lmms-eval runs every task of a tag; tags do not aggregate):

==================================  ===========================================================
``<base>_<form>_<N>seeds``          the N seeds of one stochastic probe (``mme_tokperm_5seeds``)
``<base>_<probe>_all``              every variant of one probe on one benchmark
                                    (``mme_pdrop_random_all``: 9 ratios x 5 seeds)
``<base>_tokgroup_m<M>``            the M*M keep-one-group tasks (patch information loss)
``<base>_toknoise_m<M>``            (opt-in family) the group-noise draws (importance)
``<base>_robustness``               every variant of one benchmark
``lmms_ac_<probe>``                 one probe on every benchmark (``lmms_ac_tokperm``)
``lmms_ac_robustness_<study>``      every variant of the benchmarks of one study (law, perception)
``lmms_ac_robustness``              everything generated
==================================  ===========================================================

Default variants per benchmark (109): ``patchshuffle{2,4,8,14}`` x 5 seeds, ``pdrop_random10..90``
x 5 seeds, ``pdrop_salient10..90``, ``pdrop_nonsalient10..90`` (r = fraction of the attention mass
removed; by cell count: opt-in families ``pdrop_salient_count``, ``pdrop_nonsalient_count``, tasks
``<base>_pdrop_salient30_count``), ``tokperm`` x 5 seeds,
``synthetic``, ``tokgroup_m2_g0..3`` and ``tokgroup_m4_g0..15``. Opt-in families (importance
scores, 10 noise draws each): ``toknoise`` (M=4, all groups), ``layernoise`` (layers 0, 4, .., 32),
``modnoise`` (image/text at layers 0, 8, 16, 24); select them with ``LMMS_AC_VARIANTS``.

How a generated task works
--------------------------
Its YAML (in the cache directory, never edited by hand) ``include:``-s the base task's YAML
(absolute path taken from the TaskManager index), so data, prompts, ``process_results`` and metrics
are the base task's. It sets ``task``, ``tag``, ``metadata`` (the base's metadata, a list of dicts
merged into one dict, plus ``lmms_ac: {base_task, benchmark, perturbation, form, name, stage,
params, severity, seed, stochastic, seeds, family}`` where ``perturbation`` is the seed-free string
form (``tokperm``, ``pdrop_random50``: the seeds of one probe share it), ``form`` the one with the seed
(``tokperm_s3``) and ``severity`` the single numeric parameter or null; lmms-eval keeps it in
``configs[task]['metadata']`` of its results JSON, where ``lmms_ac.results`` reads it) and overrides ``doc_to_visual`` with ``!function lmms_ac_shim.visual__<task>``: ONE shim module
in the generated directory resolves every such name to a :class:`GeneratedVisual`, which

* for ``image``/``tokens``/``hidden`` perturbations returns the base task's visuals unchanged (the
  model applies the perturbation through its hooks, see ``lmms_ac.perturb_bridge``) but raises a
  ``RuntimeError`` unless the model declared it can (:func:`declare_perturbation_support`, called by
  ``lmms_ac_llava``): a perturbed task must never run clean by accident;
* for ``dataset`` perturbations swaps the images (``synthetic``: the regenerated images written by
  ``lmms-ac synthesize``, see :mod:`lmms_ac.robustness.synthesis`) and works with any model.

Indexing is cheap: the YAMLs are written once per hash of (lmms-eval version, catalogue, benchmark
table with the base YAMLs' paths and mtimes, selected variant families, this module's source) into
``$LMMS_AC_CACHE/tasks/<hash>/`` (default ``~/.cache/lmms_ac/tasks/<hash>/``; the directory is built
under a temporary name and renamed into place, so it is complete or absent) together with an
``index.json`` from which :func:`extend_index` fills the TaskManager index without parsing a YAML.

Stale hash directories are pruned (:func:`prune_cache`, once per process after the current
directory is complete): a sibling is removed only if it carries our marker file
(``.lmms_ac_generated``, written into every generated directory; nothing else in the cache root is
ever touched), is not among the ``$LMMS_AC_CACHE_KEEP`` (default 3, the current one included) most
recently used, and was last used (marker mtime, refreshed by every process that indexes it) more
than an hour ago and before the current one. Processes take a shared ``flock`` on
``<cache>/tasks/.lock`` while they check and refresh a directory; the pruner takes it exclusively
(skipping the prune if it is busy) to move stale directories out of the way, so a data-parallel
rank or another lmms-eval version never loses the directory it is using.

Environment variables
---------------------
``LMMS_AC_CACHE``      cache root (the generated tasks go to ``$LMMS_AC_CACHE/tasks/<hash>``).
``LMMS_AC_CACHE_KEEP`` generated-task directories kept by the pruning (default 3; ``0`` = never prune).
``LMMS_AC_PROBES``     comma-separated modules imported before indexing / name lookup; they call
                       :func:`register_probe` / :func:`register_benchmark` (see ADDING_A_PROBE.md).
                       Installed packages can use the entry-point group ``lmms_ac.probes`` instead.
``LMMS_AC_VARIANTS``   variant families to generate: comma-separated family names, ``default``
                       (the default set, the value when unset), ``all``; ``-name`` removes one.
                       E.g. ``default,toknoise`` or ``tokperm,patchshuffle``.
``LMMS_AC_SYNTHETIC``  root of the synthetic images (``<root>/<base task>/``), see synthesis.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, Union

from loguru import logger

from lmms_ac.registry import Registry

from .base import INT, Codec, Perturbation
from .catalogue import PERTURBATIONS, parse_perturbation, register as _catalogue_register, robust_task_name, severity

GENERATOR_VERSION = 1
SHIM_MODULE = "lmms_ac_shim"
CACHE_ENV = "LMMS_AC_CACHE"
PROBES_ENV = "LMMS_AC_PROBES"
VARIANTS_ENV = "LMMS_AC_VARIANTS"
ENTRY_POINT_GROUP = "lmms_ac.probes"
SUPPORTED_STAGES = ("image", "tokens", "hidden")
DEFAULT_SEEDS = 5
DRAWS = 10
ALL_TAG = "lmms_ac_robustness"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_TASK_CACHE: Dict[str, Optional["Perturbation"]] = {}
_STATE = [0]


def _changed() -> None:
    """A registry changed: forget cached name lookups."""
    _STATE[0] += 1
    _TASK_CACHE.clear()


# ================================================================================== benchmarks
# the ONE benchmark registry lives in lmms_ac.benchmarks (collect and the law read it too)
from lmms_ac.benchmarks import BENCHMARKS, Benchmark, base_tasks, benchmark, register_benchmark  # noqa: E402,F401
from lmms_ac.benchmarks import all_benchmarks as _benchmarks  # noqa: E402


# ================================================================================== variant families
@dataclass(frozen=True)
class VariantFamily:
    """Which variants of one probe every benchmark gets.

    ``params``: one dict per variant (constructor arguments of the catalogue class); ``seeds``:
    seeds 0..seeds-1 of each; ``tag_form``: an optional per-benchmark tag ``<base>_<tag_form>``
    formatted with the variant's parameters (e.g. ``tokgroup_m{m}``); ``benchmarks``: restrict to
    these bases (short keys or task names; None = all); ``default``: part of the default set.
    """

    name: str
    probe: str
    params: Tuple[Tuple[Tuple[str, Any], ...], ...] = ((),)
    seeds: int = 1
    default: bool = True
    tag_form: Optional[str] = None
    benchmarks: Optional[Tuple[str, ...]] = None

    def perturbations(self) -> List[Perturbation]:
        cls = PERTURBATIONS.get(self.probe)
        return [cls(**dict(p)).with_seed(s) for p in self.params for s in range(self.seeds)]

    def applies_to(self, bench: Benchmark) -> bool:
        return self.benchmarks is None or bench.key in self.benchmarks or bench.task in self.benchmarks

    def signature(self) -> Any:
        return [self.name, self.probe, [list(map(list, p)) for p in self.params], self.seeds, self.tag_form,
                list(self.benchmarks) if self.benchmarks is not None else None]


VARIANTS: Registry[VariantFamily] = Registry("variant family")


def _freeze(params: Iterable[Mapping[str, Any]]) -> Tuple[Tuple[Tuple[str, Any], ...], ...]:
    return tuple(tuple(sorted(dict(p).items())) for p in params)


def register_variants(name: str, probe: Optional[str] = None, params: Iterable[Mapping[str, Any]] = ({},), *,
                      seeds: Optional[int] = None, default: bool = True, tag_form: Optional[str] = None,
                      benchmarks: Optional[Sequence[str]] = None, overwrite: bool = False) -> VariantFamily:
    """Register a variant family (``probe`` defaults to ``name``). Each parameter set is checked by
    building the perturbation and reading its string form back (unique, round-trips)."""
    probe = probe or name
    cls = PERTURBATIONS.get(probe)
    seeds = int(seeds if seeds is not None else (DEFAULT_SEEDS if cls.stochastic else 1))
    if seeds < 1:
        raise ValueError(f"variant family {name!r}: seeds must be >= 1, got {seeds}")
    family = VariantFamily(name, probe, _freeze(params), seeds, bool(default), tag_form,
                           tuple(benchmarks) if benchmarks is not None else None)
    forms = set()
    for params_ in family.params:
        p = cls(**dict(params_))
        back = parse_perturbation(p.to_string())
        if type(back) is not type(p) or back != p:
            raise ValueError(f"variant {p.to_string()!r} of family {name!r} does not read back as itself "
                             f"(got {back!r}); make its string form unambiguous")
        if p.to_string() in forms:
            raise ValueError(f"variant family {name!r} lists {p.to_string()!r} twice")
        forms.add(p.to_string())
    if name in VARIANTS and VARIANTS.get(name) == family:
        return family
    VARIANTS.register(name, family, overwrite=overwrite)
    _changed()
    return family


_RATIOS = [{"ratio": round(0.1 * i, 1)} for i in range(1, 10)]
register_variants("patchshuffle", params=[{"n": n} for n in (2, 4, 8, 14)], seeds=DEFAULT_SEEDS)
register_variants("pdrop_random", params=_RATIOS, seeds=DEFAULT_SEEDS)
register_variants("pdrop_salient", params=_RATIOS)  # by attention mass (the paper's definition)
register_variants("pdrop_nonsalient", params=_RATIOS)
# opt-in: selection by cell count (LMMS_AC_VARIANTS=default,pdrop_salient_count,pdrop_nonsalient_count)
register_variants("pdrop_salient_count", "pdrop_salient", params=[{**r, "by": "count"} for r in _RATIOS], default=False)
register_variants("pdrop_nonsalient_count", "pdrop_nonsalient", params=[{**r, "by": "count"} for r in _RATIOS],
                  default=False)
register_variants("tokperm", seeds=DEFAULT_SEEDS)
register_variants("synthetic")
register_variants("tokgroup", params=[{"m": m, "group": g} for m in (2, 4) for g in range(m * m)],
                  tag_form="tokgroup_m{m}")
# importance scores (opt-in: LMMS_AC_VARIANTS=default,toknoise,...), DRAWS seeded noise draws each
register_variants("toknoise", params=[{"m": 4, "group": g} for g in range(16)], seeds=DRAWS, default=False,
                  tag_form="toknoise_m{m}")
register_variants("layernoise", params=[{"layer": layer} for layer in range(0, 33, 4)], seeds=DRAWS, default=False)
register_variants("modnoise", params=[{"modality": mod, "layer": layer} for mod in ("image", "text")
                                      for layer in (0, 8, 16, 24)], seeds=DRAWS, default=False)


def selected_families(spec: Optional[str] = None) -> List[VariantFamily]:
    """The families named by ``spec`` (default: ``$LMMS_AC_VARIANTS`` or ``default``)."""
    _ensure_plugins()
    spec = spec if spec is not None else os.environ.get(VARIANTS_ENV, "")
    words = [w.strip() for w in re.split(r"[,\s]+", spec or "default") if w.strip()] or ["default"]
    chosen: List[str] = []
    for word in words:
        remove = word.startswith("-")
        word = word.lstrip("-+")
        if word == "default":
            names = [n for n in VARIANTS.names() if VARIANTS.get(n).default]
        elif word == "all":
            names = VARIANTS.names()
        else:
            VARIANTS.get(word)  # did-you-mean error for unknown families
            names = [word]
        if remove:
            chosen = [n for n in chosen if n not in names]
        else:
            chosen += [n for n in names if n not in chosen]
    return [VARIANTS.get(n) for n in chosen]


# ================================================================================== probes (public API)
def _function_probe(fn: Callable, name: str, stage: str, stochastic: bool, form: Optional[str],
                    codecs: Optional[Mapping[str, Codec]]) -> Type[Perturbation]:
    form = form or name
    slots = re.findall(r"\{(\w+)\}", form)
    codecs = {s: (codecs or {}).get(s, INT) for s in slots}
    if stage == "dataset":
        raise ValueError("a dataset-stage probe substitutes whole images: write a Perturbation subclass with "
                         "substitute_visuals(self, visuals, doc, task) and pass the class to register_probe")

    def apply(self, x, ctx):
        return fn(x, ctx, **self.params)

    cls = dataclasses.make_dataclass(
        "".join(part.title() for part in name.split("_")) + "Probe",
        [(s, Any) for s in slots],
        bases=(Perturbation,),
        frozen=True,
        kw_only=True,
        namespace={"name": name, "stage": stage, "stochastic": bool(stochastic), "form": form, "codecs": codecs,
                   "apply": apply, "__doc__": fn.__doc__, "probe_function": staticmethod(fn)},
    )
    cls.__module__ = getattr(fn, "__module__", __name__)
    return cls


def _same_origin(a: Type[Perturbation], b: Type[Perturbation]) -> bool:
    fa, fb = getattr(a, "probe_function", None), getattr(b, "probe_function", None)
    if fa is not None and fb is not None:
        return (fa.__module__, fa.__qualname__) == (fb.__module__, fb.__qualname__)
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register_probe(probe: Union[Type[Perturbation], Callable, None] = None, *, name: Optional[str] = None,
                   stage: str = "image", stochastic: bool = False, form: Optional[str] = None,
                   codecs: Optional[Mapping[str, Codec]] = None, variants: Optional[Iterable[Mapping[str, Any]]] = None,
                   seeds: Optional[int] = None, default: bool = True, tag_form: Optional[str] = None,
                   benchmarks: Optional[Sequence[str]] = None, overwrite: bool = False):
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
        return lambda obj: register_probe(obj, name=name, stage=stage, stochastic=stochastic, form=form, codecs=codecs,
                                          variants=variants, seeds=seeds, default=default, tag_form=tag_form,
                                          benchmarks=benchmarks, overwrite=overwrite)
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
                raise ValueError(f"perturbation {cls.name!r} is already registered (by "
                                 f"{PERTURBATIONS.get(cls.name).__module__}); pass overwrite=True to replace it")
            PERTURBATIONS.unregister(cls.name)
            _catalogue_register(cls)
    else:
        _catalogue_register(cls)
    same = cls.name in VARIANTS and _same_origin(PERTURBATIONS.get(VARIANTS.get(cls.name).probe), cls)
    register_variants(cls.name, cls.name, variants if variants is not None else default_variants, seeds=seeds,
                      default=default, tag_form=tag_form, benchmarks=benchmarks, overwrite=overwrite or same)
    _changed()
    if isinstance(probe, type):
        return probe
    try:
        probe.perturbation_class = cls  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        pass
    return probe


# ================================================================================== plugins
_PLUGINS_LOADED: set = set()
_ENTRY_POINTS_LOADED = False
_LOCK = threading.RLock()


def _ensure_plugins() -> None:
    """Import the modules named in ``$LMMS_AC_PROBES`` and the ``lmms_ac.probes`` entry points
    (once each per process). A module that fails to import is an error, never skipped."""
    global _ENTRY_POINTS_LOADED
    import importlib

    with _LOCK:
        if not _ENTRY_POINTS_LOADED:
            _ENTRY_POINTS_LOADED = True
            from importlib.metadata import entry_points

            for ep in entry_points(group=ENTRY_POINT_GROUP):
                try:
                    ep.load()
                except Exception as err:
                    raise ImportError(f"lmms-ac probe plugin {ep.name!r} ({ep.value}) failed to load: {err}") from err
        for module in [m.strip() for m in re.split(r"[,\s]+", os.environ.get(PROBES_ENV, "")) if m.strip()]:
            if module in _PLUGINS_LOADED:
                continue
            try:
                importlib.import_module(module)
            except Exception as err:
                raise ImportError(f"{PROBES_ENV}: cannot import probe module {module!r}: {err}") from err
            _PLUGINS_LOADED.add(module)


# ================================================================================== task specs
@dataclass(frozen=True)
class TaskSpec:
    """One generated task."""

    name: str
    base: str
    benchmark: str
    perturbation: Perturbation
    family: str
    seeds: int
    tags: Tuple[str, ...]

    @property
    def stage(self) -> str:
        return self.perturbation.stage

    @property
    def seeds_tag(self) -> Optional[str]:
        return next((t for t in self.tags if t.endswith(f"_{self.seeds}seeds")), None) if self.seeds > 1 else None


def task_specs(bases: Optional[Iterable[str]] = None, families: Optional[Sequence[VariantFamily]] = None) -> List[TaskSpec]:
    """The generated tasks: every selected family on every benchmark (``bases``: restrict to these
    lmms-eval task names). Pure: needs no TaskManager."""
    families = selected_families() if families is None else list(families)
    wanted = None if bases is None else set(bases)
    specs: List[TaskSpec] = []
    for bench in _benchmarks():
        if wanted is not None and bench.task not in wanted:
            continue
        base = bench.task
        for fam in families:
            if not fam.applies_to(bench):
                continue
            for p in fam.perturbations():
                seed0 = p.with_seed(0).to_string()
                tags = [ALL_TAG] + [f"{ALL_TAG}_{s}" for s in bench.studies] + [
                    f"lmms_ac_{fam.probe}", f"{base}_robustness", f"{base}_{fam.probe}_all"]
                if fam.tag_form:
                    tags.append(f"{base}_{fam.tag_form.format(**p.params)}")
                if fam.seeds > 1:
                    tags.append(f"{base}_{seed0}_{fam.seeds}seeds")
                specs.append(TaskSpec(robust_task_name(base, p), base, bench.key, p, fam.name, fam.seeds, tuple(tags)))
    return specs


# ================================================================================== generation
def cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "tasks"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lmms_ac" / "tasks"


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


_SHIM_SOURCE = '''"""Generated by lmms_ac.robustness.tasks: the ONE shim of the generated robustness tasks.

``!function {shim}.visual__<task>`` in a generated YAML resolves (module ``__getattr__``) to the
``doc_to_visual`` of generated task ``<task>``; see lmms_ac.robustness.tasks.GeneratedVisual.
"""
import os as _os

from lmms_ac.robustness.tasks import shim_attribute as _shim_attribute

_HERE = _os.path.dirname(_os.path.abspath(__file__))


def __getattr__(name):
    return _shim_attribute(name, _HERE)
'''.replace("{shim}", SHIM_MODULE)


def _catalogue_signature() -> List[Any]:
    out = []
    for name in PERTURBATIONS.names():
        cls = PERTURBATIONS.get(name)
        out.append([name, cls.form, cls.stage, bool(cls.stochastic), f"{cls.__module__}.{cls.__qualname__}"])
    return out


def _stat(path: str) -> List[int]:
    try:
        st = os.stat(path)
        return [st.st_mtime_ns, st.st_size]
    except OSError:
        return [0, 0]


_CODE_HASH: List[str] = []


def _code_hash() -> str:
    """Hash of this module's source: any change to how YAMLs are written regenerates them."""
    if not _CODE_HASH:
        try:
            _CODE_HASH.append(hashlib.sha256(Path(__file__).read_bytes()).hexdigest())
        except OSError:
            _CODE_HASH.append(str(GENERATOR_VERSION))
    return _CODE_HASH[0]


def index_hash(base_yamls: Mapping[str, str], families: Sequence[VariantFamily]) -> str:
    """Hash of everything the generated files depend on."""
    config = {
        "generator": GENERATOR_VERSION,
        "code": _code_hash(),
        "shim": hashlib.sha256(_SHIM_SOURCE.encode()).hexdigest(),
        "lmms_eval": _version("lmms-eval"),
        "lmms_ac": _version("lmms-ac"),
        "catalogue": _catalogue_signature(),
        "benchmarks": [[b.key, b.task, list(b.studies), base_yamls.get(b.task), _stat(base_yamls[b.task])]
                       for b in _benchmarks() if b.task in base_yamls],
        "families": [f.signature() for f in families],
    }
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _merged_metadata(base_meta: Any) -> Dict[str, Any]:
    """Base metadata as one dict (lmms-eval YAMLs often write ``[{version: 0.0}]``)."""
    if isinstance(base_meta, dict):
        return dict(base_meta)
    out: Dict[str, Any] = {}
    if isinstance(base_meta, list):
        for item in base_meta:
            if isinstance(item, dict):
                out.update(item)
    return out


def task_metadata(spec: TaskSpec, index_id: str = "") -> Dict[str, Any]:
    """The ``metadata.lmms_ac`` block of a generated task (what the results collector reads); the
    perturbation's part comes from :func:`~lmms_ac.robustness.catalogue.perturbation_metadata`, the
    same function that describes a perturbation given as a model argument."""
    from .catalogue import perturbation_metadata

    return {
        **perturbation_metadata(spec.perturbation, spec.base),
        "benchmark": spec.benchmark,
        "seeds": spec.seeds,
        "family": spec.family,
        "generated_by": f"lmms_ac.robustness.tasks v{GENERATOR_VERSION}" + (f" ({index_id})" if index_id else ""),
    }


def _yaml_text(spec: TaskSpec, base_yaml: str, base_config: Mapping[str, Any], index_id: str) -> str:
    import yaml

    meta = _merged_metadata(base_config.get("metadata"))
    meta["lmms_ac"] = task_metadata(spec, index_id)
    body: Dict[str, Any] = {"include": base_yaml, "task": spec.name, "tag": list(spec.tags)}
    if base_config.get("output_type"):  # lmms-eval's `--tasks list` reads it without resolving includes
        body["output_type"] = base_config["output_type"]
    if base_config.get("group") is not None:
        body["group"] = None  # a TaskConfig may not have both group and tag
    body["metadata"] = meta
    text = yaml.safe_dump(body, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return ("# Generated by lmms_ac.robustness.tasks from the perturbation catalogue; do not edit.\n"
            f"# {spec.perturbation.stage} perturbation {spec.perturbation.to_string()!r} of {spec.base!r}.\n"
            + text + f"doc_to_visual: !function {SHIM_MODULE}.visual__{spec.name}\n")


def _base_config_simple(path: str) -> Dict[str, Any]:
    from lmms_eval import utils

    return utils.load_yaml_config(path, mode="simple")


@dataclass
class IndexInfo:
    """What :func:`extend_index` did."""

    directory: Path
    hash: str
    tasks: int
    tags: int
    generated: bool
    skipped: List[str] = field(default_factory=list)


def generate(directory: Path, specs: Sequence[TaskSpec], base_yamls: Mapping[str, str], index_id: str) -> Path:
    """Write the YAMLs, the shim and ``index.json`` of ``specs`` into ``directory`` (atomically:
    built under a temporary name, then renamed; if another process got there first, its copy wins)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=str(directory.parent)))
    try:
        base_configs = {b: _base_config_simple(p) for b, p in base_yamls.items() if any(s.base == b for s in specs)}
        tasks: Dict[str, Any] = {}
        tags: Dict[str, List[str]] = {}
        for spec in specs:
            filename = f"{spec.name}.yaml"
            (tmp / filename).write_text(_yaml_text(spec, base_yamls[spec.base], base_configs[spec.base], index_id),
                                        encoding="utf-8")
            tasks[spec.name] = {"yaml": filename, "base": spec.base, "benchmark": spec.benchmark,
                                "perturbation": spec.perturbation.to_string(), "probe": spec.perturbation.name,
                                "stage": spec.perturbation.stage, "seed": int(spec.perturbation.seed),
                                "seeds": spec.seeds, "family": spec.family, "tags": list(spec.tags)}
            for tag in spec.tags:
                tags.setdefault(tag, []).append(spec.name)
        (tmp / f"{SHIM_MODULE}.py").write_text(_SHIM_SOURCE, encoding="utf-8")
        manifest = {"hash": index_id, "generator": GENERATOR_VERSION, "lmms_eval": _version("lmms-eval"),
                    "bases": {b: {"yaml_path": base_yamls[b]} for b in base_configs}, "tasks": tasks, "tags": tags}
        (tmp / "index.json").write_text(json.dumps(manifest, indent=0, sort_keys=True), encoding="utf-8")
        _write_marker(tmp, index_id)
        try:
            os.rename(tmp, directory)
        except OSError:
            if not (directory / "index.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # a concurrent process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


# ================================================================================== cache pruning
MARKER = ".lmms_ac_generated"
MARKER_KIND = "lmms_ac.robustness.tasks generated-task directory"
KEEP_ENV = "LMMS_AC_CACHE_KEEP"
DEFAULT_KEEP = 3
PRUNE_MIN_AGE_S = 3600.0
LOCK_FILE = ".lock"
TRASH_PREFIX = ".lmms_ac_trash-"
_HASH_DIR = re.compile(r"^[0-9a-f]{16}$")
_PRUNED: set = set()


def _write_marker(directory: Path, index_id: str) -> None:
    """The file that says "generated by us" (checked before anything is deleted); its mtime is the
    directory's last use."""
    marker = {"kind": MARKER_KIND, "hash": index_id, "generator": GENERATOR_VERSION, "lmms_eval": _version("lmms-eval")}
    (Path(directory) / MARKER).write_text(json.dumps(marker, sort_keys=True), encoding="utf-8")


def _marker_time(directory: Path) -> Optional[float]:
    """Last use of ``directory`` (its marker's mtime) if it is a generated-task directory of ours:
    a real directory (not a link) named like a hash, with our marker naming that same hash."""
    try:
        if directory.is_symlink() or not directory.is_dir() or not _HASH_DIR.match(directory.name):
            return None
        marker = directory / MARKER
        if marker.is_symlink():
            return None
        data = json.loads(marker.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("kind") != MARKER_KIND or data.get("hash") != directory.name:
            return None
        return marker.stat().st_mtime
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _cache_lock(root: Path, exclusive: bool):
    """``flock`` on ``root/.lock``: shared for users of a directory (blocks while a prune is moving
    directories away, which is brief), exclusive and non-blocking for the pruner. Yields False only
    when the exclusive lock is busy; where ``flock`` is unavailable it yields True unlocked (the
    one-hour grace of :func:`prune_cache` still protects directories in use)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield True
        return
    fd = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(root / LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, (fcntl.LOCK_EX | fcntl.LOCK_NB) if exclusive else fcntl.LOCK_SH)
        acquired = True
    except BlockingIOError:
        acquired = False
    except OSError as err:  # read-only cache, no flock on this file system
        logger.debug(f"lmms-ac: no lock on {root / LOCK_FILE} ({err}); going on without it")
        acquired = True
    try:
        yield acquired
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def claim_directory(directory: Union[str, Path]) -> bool:
    """True if ``directory`` holds a complete generation; then it is marked as used now (its marker
    is refreshed, or written for a complete directory that lacks one), under the shared lock, so
    that no concurrent prune removes it."""
    directory = Path(directory)
    with _cache_lock(directory.parent, exclusive=False):
        if not (directory / "index.json").is_file():
            return False
        marker = directory / MARKER
        try:
            if marker.is_file():
                os.utime(marker)
            else:
                _write_marker(directory, directory.name)
        except OSError as err:  # a read-only cache still works, it is just never pruned
            logger.debug(f"lmms-ac: cannot mark {directory} as used ({err})")
        return True


def _keep_setting() -> int:
    raw = os.environ.get(KEEP_ENV, "").strip()
    if not raw:
        return DEFAULT_KEEP
    try:
        return max(0, int(raw))
    except ValueError:
        logger.warning(f"lmms-ac: {KEEP_ENV}={raw!r} is not an integer; keeping {DEFAULT_KEEP} task directories")
        return DEFAULT_KEEP


def prune_cache(current: Union[str, Path], keep: Optional[int] = None, min_age: float = PRUNE_MIN_AGE_S,
                now: Optional[float] = None) -> List[Path]:
    """Remove stale generated-task directories next to ``current`` (a complete hash directory);
    returns the removed ones.

    A sibling is removed only if all hold: it is ours (:func:`_marker_time`: hash name, our marker,
    not a link), it is not among the ``keep`` most recently used directories (``current`` always
    counts as one of them; default ``$LMMS_AC_CACHE_KEEP`` or 3; 0 disables pruning), and it was
    last used more than ``min_age`` seconds ago and before ``current``. Under the exclusive lock
    (skipped when another process holds the lock) stale directories are renamed to hidden trash
    names, then deleted after the lock is released; leftover trash of an interrupted prune goes too.
    """
    current = Path(current)
    keep = _keep_setting() if keep is None else int(keep)
    if keep <= 0:
        return []
    root = current.parent
    removed: List[Path] = []
    trash: List[Path] = []
    with _cache_lock(root, exclusive=True) as acquired:
        if not acquired:
            logger.debug(f"lmms-ac: task cache {root} is in use by another process; not pruning now")
            return []
        now = time.time() if now is None else float(now)
        current_time = _marker_time(current)
        if current_time is None:
            return []  # only prune next to a complete directory of ours
        try:
            entries = list(os.scandir(root))
        except OSError:
            return []
        ours = []
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith(TRASH_PREFIX) and entry.is_dir(follow_symlinks=False):
                trash.append(path)
                continue
            if entry.name == current.name:
                continue
            used = _marker_time(path)
            if used is not None:
                ours.append((used, path))
        ours.sort(key=lambda item: item[0], reverse=True)
        for used, path in ours[keep - 1:]:
            if used > now - min_age or used > current_time:
                continue  # in use (or used recently by another version's run): never removed
            target = root / f"{TRASH_PREFIX}{path.name}-{os.getpid()}-{time.monotonic_ns()}"
            try:
                os.rename(path, target)
            except OSError as err:
                logger.debug(f"lmms-ac: cannot remove stale task directory {path}: {err}")
                continue
            trash.append(target)
            removed.append(path)
    for path in trash:
        shutil.rmtree(path, ignore_errors=True)
    if removed:
        logger.info(f"lmms-ac: removed {len(removed)} stale generated-task director{'y' if len(removed) == 1 else 'ies'} "
                    f"from {root}")
    return removed


def _prune_once(current: Path) -> None:
    """:func:`prune_cache` next to ``current``, once per process and cache root; never fails the run."""
    key = str(current.parent.resolve())
    if key in _PRUNED:
        return
    _PRUNED.add(key)
    try:
        prune_cache(current)
    except Exception as err:  # pruning is housekeeping
        logger.warning(f"lmms-ac: pruning the generated-task cache {current.parent} failed: {err}")


_MANIFESTS: Dict[str, Dict[str, Any]] = {}


def load_manifest(directory: Union[str, Path]) -> Dict[str, Any]:
    key = str(Path(directory).resolve())
    with _LOCK:
        if key not in _MANIFESTS:
            with open(Path(key) / "index.json", encoding="utf-8") as fh:
                _MANIFESTS[key] = json.load(fh)
        return _MANIFESTS[key]


def extend_index(task_manager, families: Optional[Sequence[VariantFamily]] = None) -> IndexInfo:
    """Add the generated robustness tasks and their tags to ``task_manager``'s index.

    Bases missing from the index (e.g. ``include_defaults=False``) are skipped; names the index
    already has (a user YAML of the same name) win over ours. Generates the YAMLs only when the
    hash changed; otherwise reads one ``index.json``.
    """
    _ensure_plugins()
    families = selected_families() if families is None else list(families)
    index = task_manager._task_index
    base_yamls: Dict[str, str] = {}
    skipped: List[str] = []
    for bench in _benchmarks():
        entry = index.get(bench.task)
        if entry is None:
            skipped.append(bench.task)
            continue
        if entry.get("type") != "task" or not isinstance(entry.get("yaml_path"), str):
            logger.warning(f"lmms-ac: benchmark {bench.key!r} maps to {bench.task!r}, a {entry.get('type')} of "
                           "lmms-eval, not a single task; no robustness variants generated for it")
            skipped.append(bench.task)
            continue
        base_yamls[bench.task] = os.path.abspath(entry["yaml_path"])
    index_id = index_hash(base_yamls, families)
    directory = cache_root() / index_id
    generated = False
    if not claim_directory(directory):
        specs = task_specs(base_yamls, families)
        generate(directory, specs, base_yamls, index_id)
        generated = True
        logger.info(f"lmms-ac: generated {len(specs)} robustness tasks in {directory}")
    _prune_once(directory)
    manifest = load_manifest(directory)
    ours = set()
    prefix = str(directory)
    for name, entry in manifest["tasks"].items():
        if name in index:
            logger.debug(f"lmms-ac: task {name!r} already indexed ({index[name].get('yaml_path')}); keeping it")
            continue
        index[name] = {"type": "task", "yaml_path": os.path.join(prefix, entry["yaml"])}
        ours.add(name)
    added = len(ours)
    tags = 0
    for tag, names in manifest["tags"].items():
        names = [n for n in names if n in ours]
        existing = index.get(tag)
        if existing is None:
            index[tag] = {"type": "tag", "task": list(names), "yaml_path": -1}
        elif existing.get("type") == "tag":
            existing["task"] = list(existing["task"]) + [n for n in names if n not in existing["task"]]
        else:
            logger.warning(f"lmms-ac: tag {tag!r} is already an lmms-eval {existing.get('type')}; not registered")
            continue
        tags += 1
    task_manager._all_tasks = sorted(index)
    task_manager._all_groups = sorted(k for k, v in index.items() if v["type"] == "group")
    task_manager._all_subtasks = sorted(k for k, v in index.items() if v["type"] == "task")
    task_manager._all_tags = sorted(k for k, v in index.items() if v["type"] == "tag")
    info = IndexInfo(directory, index_id, added, tags, generated, skipped)
    task_manager._lmms_ac_robustness = info
    return info


# ================================================================================== name -> perturbation
def _cache_key() -> Tuple[int, int, int, int, str]:
    return (_STATE[0], PERTURBATIONS.version, BENCHMARKS.version, VARIANTS.version, os.environ.get(PROBES_ENV, ""))


_CACHE_KEY: List[Any] = [None]


def perturbation_for_task(task_name: str) -> Optional[Perturbation]:
    """The perturbation a generated robustness task applies, or None for any other task.

    Needs only the name (no TaskManager): ``<base>_<form>`` with ``<base>`` a registered benchmark's
    task and ``<form>`` a catalogue string form (probe modules from ``$LMMS_AC_PROBES`` and the
    ``lmms_ac.probes`` entry points are imported first). Cached: O(1) after the first call.
    """
    key = _cache_key()
    if _CACHE_KEY[0] != key:
        _ensure_plugins()
        _TASK_CACHE.clear()
        _CACHE_KEY[0] = key = _cache_key()
    try:
        return _TASK_CACHE[task_name]
    except KeyError:
        pass
    result = None
    for base in sorted(base_tasks(), key=len, reverse=True):
        if task_name.startswith(base + "_"):
            try:
                result = parse_perturbation(task_name[len(base) + 1:])
                break
            except (ValueError, KeyError):
                continue
    _TASK_CACHE[task_name] = result
    return result


def base_task(task_name: str) -> str:
    """The base task of a generated task (the task itself when clean)."""
    p = perturbation_for_task(task_name)
    if p is None:
        return task_name
    return task_name[: -len(p.to_string()) - 1]


# ================================================================================== model support & guard
_SUPPORT: Dict[str, str] = {}


def declare_perturbation_support(stages: Iterable[str] = SUPPORTED_STAGES, model: str = "lmms_ac_llava") -> None:
    """Called by a model wrapper that applies image/token/hidden perturbations itself (through
    ``lmms_ac.perturb_bridge``); without it a generated perturbed task refuses to run."""
    for stage in stages:
        if stage not in SUPPORTED_STAGES:
            raise ValueError(f"unknown perturbation stage {stage!r}; one of {', '.join(SUPPORTED_STAGES)}")
        _SUPPORT[stage] = model


def perturbation_support() -> Dict[str, str]:
    """Stage -> model that declared it (this process)."""
    return dict(_SUPPORT)


def reset_perturbation_support() -> None:
    """Forget every declaration (tests)."""
    _SUPPORT.clear()


class PerturbationNotSupportedError(RuntimeError):
    """A perturbed task ran on a model that cannot apply the perturbation."""


def check_support(task: str, p: Perturbation) -> None:
    if p.stage == "dataset" or p.stage in _SUPPORT:
        return
    raise PerturbationNotSupportedError(
        f"task {task!r} applies the {p.stage}-level perturbation {p.to_string()!r}, which the model itself must "
        f"apply, but the model in use has not declared support for {p.stage} perturbations; running it would "
        f"silently give clean scores. Run it with `--model lmms_ac_llava`, or make your model apply it through "
        f"lmms_ac.perturb_bridge and call lmms_ac.robustness.declare_perturbation_support() in its __init__.")


_BASE_VISUALS: Dict[str, Any] = {}


def base_doc_to_visual(base_yaml: str) -> Any:
    """The ``doc_to_visual`` of a base task's YAML (resolved once per process)."""
    with _LOCK:
        if base_yaml not in _BASE_VISUALS:
            from lmms_eval import utils

            _BASE_VISUALS[base_yaml] = utils.load_yaml_config(base_yaml, mode="full").get("doc_to_visual")
        return _BASE_VISUALS[base_yaml]


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
            _ensure_plugins()
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
        from .synthesis import synthetic_visuals

        return synthetic_visuals(base, visuals, seed=p.seed, task=task)
    substitute = getattr(p, "substitute_visuals", None)
    if substitute is None:
        raise NotImplementedError(f"dataset-stage perturbation {p.to_string()!r} defines no substitute_visuals(visuals, doc, task)")
    return substitute(visuals, doc, task)


def shim_attribute(name: str, directory: str) -> GeneratedVisual:
    """Resolve ``lmms_ac_shim.<name>`` of the generated directory ``directory``."""
    if not name.startswith("visual__"):
        raise AttributeError(f"module {SHIM_MODULE!r} has no attribute {name!r}")
    task = name[len("visual__"):]
    manifest = load_manifest(directory)
    entry = manifest["tasks"].get(task)
    if entry is None:
        raise AttributeError(f"{SHIM_MODULE}: {task!r} is not a generated task of {directory}")
    base_yaml = manifest["bases"][entry["base"]]["yaml_path"]
    return GeneratedVisual(task, entry["base"], base_yaml, entry["perturbation"])


__all__ = [
    "BENCHMARKS", "Benchmark", "VARIANTS", "VariantFamily", "TaskSpec", "IndexInfo",
    "register_benchmark", "register_probe", "register_variants", "selected_families", "task_specs",
    "extend_index", "perturbation_for_task", "base_task", "benchmark", "base_tasks",
    "declare_perturbation_support", "perturbation_support", "reset_perturbation_support",
    "PerturbationNotSupportedError", "GeneratedVisual", "cache_root", "severity", "prune_cache", "claim_directory",
]
