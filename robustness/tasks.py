"""Robustness variants of lmms-eval tasks, generated from the perturbation catalogue: the public
names, re-exported from the modules that do one job each:

==========================  ===================================================================
``lmms_ac.benchmarks``      the benchmark registry (``BENCHMARKS``, ``register_benchmark``)
``variants``                variant families (``VARIANTS``, ``register_variants``, ``LMMS_AC_VARIANTS``)
``probe_api``               ``register_probe``: catalogue entry + variant family in one call
``plugins``                 probe plugins (``LMMS_AC_PROBES``, entry points ``lmms_ac.probes``)
``generation``              task specs, tags, the hash, writing the YAMLs/shim/``index.json``
``task_cache``              the cache directory, its marker, lock, claiming and pruning
``index``                   ``extend_index``: the generated tasks into a TaskManager (via ``lmms_ac.plugin``)
``names``                   task name -> perturbation (the generated index, else the name itself)
``guard``                   ``GeneratedVisual`` and the support declarations (never run clean by accident)
==========================  ===================================================================

Nothing here is a hand-copied YAML. Three small tables drive everything:

* ``BENCHMARKS`` (``lmms_ac.benchmarks``): the benchmarks of both studies, each mapped to ONE
  lmms-eval 0.7.3 task (a single task, never a group); extra bases come from :func:`register_benchmark`.
* ``PERTURBATIONS`` (``lmms_ac.robustness.catalogue``): what a perturbation does.
* ``VARIANTS``: which perturbations (parameters x seeds) every benchmark gets, one *family* per
  probe; :func:`register_probe` adds a catalogue entry and its family in one call.

Task names and tags
-------------------
A variant task is ``<base>_<form>``: the base lmms-eval task name and the catalogue's string form
(:func:`~lmms_ac.robustness.grammar.robust_task_name`), seed 0 without suffix and seed k as
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
``configs[task]['metadata']`` of its results JSON, where ``lmms_ac.results`` reads it) and overrides
``doc_to_visual`` with ``!function lmms_ac_shim.visual__<task>``: ONE shim module
in the generated directory resolves every such name to a :class:`GeneratedVisual`, which

* for ``image``/``tokens``/``hidden`` perturbations returns the base task's visuals unchanged (the
  model applies the perturbation through its hooks, see ``lmms_ac.perturb_bridge``) but raises a
  ``RuntimeError`` unless the model declared it can (:func:`declare_perturbation_support`, called by
  ``lmms_ac_llava``): a perturbed task must never run clean by accident;
* for ``dataset`` perturbations swaps the images (``synthetic``: the regenerated images written by
  ``lmms-ac synthesize``, see :mod:`lmms_ac.robustness.synthetic_store`) and works with any model.

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
``LMMS_AC_SYNTHETIC``  root of the synthetic images (``<root>/<base task>/``), see synthetic_store.py.
"""

from __future__ import annotations

from lmms_ac.benchmarks import BENCHMARKS, Benchmark, base_tasks, benchmark, register_benchmark
from lmms_ac.benchmarks import all_benchmarks as _benchmarks  # noqa: F401 (used by lmms-ac tasks)

from .grammar import severity
from .generation import ALL_TAG, GENERATOR_VERSION, TaskSpec, generate, index_hash, task_metadata, task_specs
from .guard import (
    SHIM_MODULE,
    SUPPORTED_STAGES,
    GeneratedVisual,
    PerturbationNotSupportedError,
    check_support,
    declare_perturbation_support,
    perturbation_support,
    reset_perturbation_support,
    shim_attribute,
)
from .index import IndexInfo, extend_index
from .names import base_task, perturbation_for_task
from .plugins import ENTRY_POINT_GROUP, PROBES_ENV, ensure_plugins
from .probe_api import register_probe
from .task_cache import (
    CACHE_ENV,
    DEFAULT_KEEP,
    KEEP_ENV,
    LOCK_FILE,
    MARKER,
    MARKER_KIND,
    TRASH_PREFIX,
    cache_root,
    claim_directory,
    load_manifest,
    prune_cache,
)
from .variants import DEFAULT_SEEDS, DRAWS, VARIANTS, VARIANTS_ENV, VariantFamily, register_variants, selected_families

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "VARIANTS",
    "VariantFamily",
    "TaskSpec",
    "IndexInfo",
    "register_benchmark",
    "register_probe",
    "register_variants",
    "selected_families",
    "task_specs",
    "extend_index",
    "perturbation_for_task",
    "base_task",
    "benchmark",
    "base_tasks",
    "declare_perturbation_support",
    "perturbation_support",
    "reset_perturbation_support",
    "PerturbationNotSupportedError",
    "GeneratedVisual",
    "cache_root",
    "severity",
    "prune_cache",
    "claim_directory",
    "generate",
    "index_hash",
    "task_metadata",
    "check_support",
    "shim_attribute",
    "ensure_plugins",
    "load_manifest",
    "ALL_TAG",
    "GENERATOR_VERSION",
    "SHIM_MODULE",
    "SUPPORTED_STAGES",
    "ENTRY_POINT_GROUP",
    "PROBES_ENV",
    "CACHE_ENV",
    "DEFAULT_KEEP",
    "KEEP_ENV",
    "LOCK_FILE",
    "MARKER",
    "MARKER_KIND",
    "TRASH_PREFIX",
    "DEFAULT_SEEDS",
    "DRAWS",
    "VARIANTS_ENV",
]
