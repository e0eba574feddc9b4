"""lmms-eval entry point (group ``lmms_eval.models``). Imports nothing heavy at module level.

lmms-eval 0.7.3 loads entry points when ``lmms_eval.models`` is first imported, which happens
before its CLI builds the ``TaskManager``; yet it reads plugin task paths (``LMMS_EVAL_PLUGINS``)
only *after* building it, so plugin tasks are invisible without ``--include_path``. This module is
the one place that works around it: ``get_manifests`` (called by lmms-eval) also

1. wraps ``TaskManager.__init__`` so every TaskManager indexes ``lmms_ac.tasks`` too, plus the
   robustness variants generated from the catalogue (``lmms_ac.tasks.extend_task_index`` ->
   ``lmms_ac.robustness.tasks.extend_index``);
2. wraps ``ConfigurableTask.download`` so a task whose dataset has a local copy under
   ``$LMMS_AC_DATASETS`` loads it with ``load_from_disk`` (see ``lmms_ac.local_datasets``), with
   the ``datasets`` cache off while the task processes its docs: a ``filter``/``map`` of a task's
   ``process_docs`` writes its cache files to a temporary folder, never into the (possibly
   read-only or shared) mirror. A mirror directory that does not exist, or a dataset found neither
   in the mirrors nor on the hub, fails with a message that says so instead of tenacity's RetryError;
3. wraps ``lmms_eval.api.instance.unwrap_generation_output``: lmms-eval 0.7.3's evaluator passes
   every response through it, and it turns a loglikelihood response ``(logprob, is_greedy)`` into the
   string ``"(-5.8, False)"``, which breaks every ``loglikelihood`` and ``multiple_choice`` task
   (``process_results`` cannot unpack it). Such pairs are passed through unchanged; everything else
   goes to lmms-eval's function;
4. wraps ``ConfigurableTask.process_results`` (built-in scoring only; a task's own
   ``process_results`` is left alone): for ``loglikelihood`` tasks it hands over the doc's one
   response (lmms-eval unpacks the list of responses, which fails); the ``multiple_choice`` scoring
   takes the *argmin* of the responses: it expects losses (what lmms-eval's own models return),
   whereas its documented contract (``lmms.loglikelihood``), lm-eval-harness and ``lmms_ac_llava``
   return log-probabilities. A log-probability is <= 0 and a loss >= 0, so responses that are all
   <= 0 are negated before that scoring: either convention picks the most likely choice
   (``acc_mutual_info``, an argmax of differences, keeps the log-probabilities it was written for).

All wrappers are idempotent and leave behaviour unchanged when nothing of ours applies.
"""
from __future__ import annotations

import contextlib
import functools
import numbers
import os
import sys
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

MODEL_ID = "lmms_ac_llava"
MODEL_CLASS = "lmms_ac.models.lmms_ac_llava.LmmsAcLlava"


def tasks_dir() -> str:
    import lmms_ac.tasks

    return os.path.dirname(os.path.abspath(lmms_ac.tasks.__file__))


def get_manifests():
    from lmms_eval.models.registry_v2 import ModelManifest

    install_hooks()
    return [ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS, aliases=("lmms_ac",))]


def install_hooks() -> None:
    _patch_task_manager()
    _patch_dataset_download()
    _patch_unwrap_generation_output()
    _patch_multiple_choice_scoring()
    _patch_evaluate_results()


def _pair(response: Any) -> Optional[Tuple[Any, Any]]:
    """A response as ``(logprob, is_greedy)`` when it is one (a tuple, or a list after a filter)."""
    if isinstance(response, (tuple, list)) and is_loglikelihood_response(tuple(response)):
        return tuple(response)  # type: ignore[return-value]
    return None


def _are_logprobs(results: Any) -> bool:
    """Multiple-choice responses that are log-probabilities (all <= 0, not all 0), not losses."""
    if not isinstance(results, (list, tuple)) or not results:
        return False
    pairs = [_pair(r) for r in results]
    if any(p is None for p in pairs):
        return False
    values = [p[0] for p in pairs]  # type: ignore[index]
    return all(v <= 0 for v in values) and any(v < 0 for v in values)


def _patch_multiple_choice_scoring() -> None:
    from lmms_eval.api.task import ConfigurableTask

    original = ConfigurableTask.process_results
    if getattr(original, "_lmms_ac", False):
        return

    @functools.wraps(original)
    def process_results(self, doc, results, *args, **kwargs):
        kind = getattr(self, "OUTPUT_TYPE", None)
        if callable(self.config.process_results):
            return original(self, doc, results, *args, **kwargs)
        if kind == "loglikelihood" and isinstance(results, (list, tuple)) and len(results) == 1 and _pair(results[0]):
            # one request per doc: lmms-eval unpacks the list of responses instead of its one response
            return original(self, doc, _pair(results[0]), *args, **kwargs)
        if kind != "multiple_choice" or not _are_logprobs(results):
            return original(self, doc, results, *args, **kwargs)
        losses = [(-float(r[0]), r[1]) for r in results]
        scored = original(self, doc, losses, *args, **kwargs)
        if "acc_mutual_info" in scored:
            scored["acc_mutual_info"] = original(self, doc, results, *args, **kwargs)["acc_mutual_info"]
        return scored

    process_results._lmms_ac = True  # type: ignore[attr-defined]
    ConfigurableTask.process_results = process_results


def is_loglikelihood_response(output: Any) -> bool:
    """``(logprob, is_greedy)``: what a model's ``loglikelihood`` returns per request."""
    return (isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], numbers.Real)
            and not isinstance(output[0], bool) and isinstance(output[1], (bool, getattr(sys.modules.get("numpy"), "bool_", bool))))


def _patch_unwrap_generation_output() -> None:
    from lmms_eval.api import instance

    original = instance.unwrap_generation_output
    if getattr(original, "_lmms_ac", False):
        return

    @functools.wraps(original)
    def unwrap_generation_output(output: Any) -> Tuple[Any, Optional[Any]]:
        if is_loglikelihood_response(output):
            return output, None
        return original(output)

    unwrap_generation_output._lmms_ac = True  # type: ignore[attr-defined]
    instance.unwrap_generation_output = unwrap_generation_output
    # the evaluator imports the name; it normally does so after this hook ran (it imports lmms_eval.models
    # first, which loads our entry point), but patch its copy too when it was imported before
    evaluator = sys.modules.get("lmms_eval.evaluator")
    if evaluator is not None and getattr(evaluator, "unwrap_generation_output", None) is original:
        evaluator.unwrap_generation_output = unwrap_generation_output


@contextlib.contextmanager
def _datasets_cache_off() -> Iterator[None]:
    """Derived datasets (``filter``/``map``) go to a temporary folder instead of next to their source."""
    import datasets

    was_enabled = datasets.is_caching_enabled()
    datasets.disable_caching()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_caching()


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def _patch_evaluate_results() -> None:
    """Add what lmms_ac_llava knows to lmms-eval's results, so ``collect`` reads it like any task metadata:

    - PatchDrop's r is a fraction of cells or of attention mass, so the fraction of cells actually removed
      varies per image. The model tallies it per task (``HookFactory.drops``); it becomes the metric
      ``cells_dropped`` (mean over every image of every rank), which the robustness table shows beside
      each drop.
    - A perturbation given as a model argument is the catalogue object the hooks applied; its metadata
      (``perturbation_metadata``, the same block a generated task carries) is written into the task's
      ``configs[task].metadata``, so collect never re-parses the model-argument string for these runs."""
    evaluator = sys.modules.get("lmms_eval.evaluator")
    if evaluator is None:
        import lmms_eval.evaluator as evaluator
    if not hasattr(evaluator, "evaluate"):
        # the lmms-eval CLI imports its evaluator, which imports lmms_eval.models, which loads this entry
        # point: the evaluator is half-initialised now; the TaskManager hook patches it once it is complete
        return
    if getattr(evaluator.evaluate, "_lmms_ac", False):
        return
    original = evaluator.evaluate

    @functools.wraps(original)
    def evaluate(*args, **kwargs):
        out = original(*args, **kwargs)
        lm = kwargs.get("lm", args[0] if args else None)
        tally = getattr(getattr(lm, "hook_factory", None), "drops", None)
        if tally is not None:
            add_drop_metrics(out, _gather_tally(tally.totals()))
        add_perturbation_metadata(out, getattr(getattr(lm, "hook_factory", None), "default", None))
        return out

    evaluate._lmms_ac = True  # type: ignore[attr-defined]
    evaluator.evaluate = evaluate


def _gather_tally(totals: Mapping[str, Tuple[float, int]]) -> Dict[str, Tuple[float, int]]:
    """Sum the per-task (sum of fractions, images) over data-parallel ranks (every rank calls evaluate)."""
    try:
        import torch.distributed as dist

        parts = [None] * dist.get_world_size() if dist.is_available() and dist.is_initialized() else None
    except ImportError:
        parts = None
    if parts is None:
        return dict(totals)
    dist.all_gather_object(parts, dict(totals))
    merged: Dict[str, Tuple[float, int]] = {}
    for part in parts:
        for task, (total, n) in part.items():
            t0, n0 = merged.get(task, (0.0, 0))
            merged[task] = (t0 + total, n0 + n)
    return merged


def add_perturbation_metadata(results: Optional[Dict[str, Any]], perturbation: Any) -> None:
    """Stamp a model-argument perturbation's metadata on every task of the run that carries none of its own
    (a generated robustness task's perturbation takes precedence in the hooks, and keeps its metadata)."""
    if not results or perturbation is None or not isinstance(results.get("configs"), dict):
        return
    from lmms_ac.results.collect import lmms_ac_metadata
    from lmms_ac.robustness.catalogue import perturbation_metadata

    for task, cfg in results["configs"].items():
        if not isinstance(cfg, dict) or lmms_ac_metadata(cfg):
            continue
        meta = cfg.get("metadata")
        block = {"lmms_ac": perturbation_metadata(perturbation, task)}
        if isinstance(meta, list):
            meta.append(block)
        elif isinstance(meta, dict):
            meta.update(block)
        else:
            cfg["metadata"] = [block]


def add_drop_metrics(results: Optional[Dict[str, Any]], totals: Mapping[str, Tuple[float, int]]) -> None:
    """Write ``cells_dropped,none`` into each tallied task's lmms-eval results (rank 0 holds them)."""
    if not results or "results" not in results:
        return
    from lmms_ac.results.table import CELLS_DROPPED_METRIC

    for task, (total, n) in totals.items():
        if task in results["results"] and n:
            results["results"][task][f"{CELLS_DROPPED_METRIC},none"] = total / n
            results["results"][task][f"{CELLS_DROPPED_METRIC}_stderr,none"] = "N/A"


def _as_list(include_path) -> List[str]:
    if include_path is None:
        return []
    return [include_path] if isinstance(include_path, str) else list(include_path)


def _patch_task_manager() -> None:
    from lmms_eval.tasks import TaskManager

    if getattr(TaskManager.__init__, "_lmms_ac", False):
        return
    original = TaskManager.__init__

    @functools.wraps(original)
    def __init__(self, verbosity="INFO", include_path=None, include_defaults=True, model_name=None, **kwargs):
        paths = _as_list(include_path)
        ours = tasks_dir()
        if ours not in paths:
            paths.append(ours)
        original(self, verbosity, include_path=paths, include_defaults=include_defaults, model_name=model_name, **kwargs)
        from lmms_ac.tasks import extend_task_index

        extend_task_index(self)
        _patch_evaluate_results()  # the CLI builds its TaskManager before it evaluates

    __init__._lmms_ac = True  # type: ignore[attr-defined]
    TaskManager.__init__ = __init__


def _patch_dataset_download() -> None:
    from lmms_eval.api.task import ConfigurableTask

    if getattr(ConfigurableTask.download, "_lmms_ac", False):
        return
    original = ConfigurableTask.download

    @functools.wraps(original)
    def download(self, dataset_kwargs=None, *args, **kwargs):
        from lmms_ac.local_datasets import ENV_VAR, expected_copies, find_local_copy, missing_mirror_dirs

        path, name = getattr(self, "DATASET_PATH", None), getattr(self, "DATASET_NAME", None)
        missing = missing_mirror_dirs()
        if missing:
            raise FileNotFoundError(
                f"{ENV_VAR} names {', '.join(map(str, missing))}, which is not a directory; fix {ENV_VAR} "
                f"(directories separated by ':') or make the mirror with `lmms-ac mirror TASK... --to DIR`")
        local = find_local_copy(path, name)
        if local is None:
            try:
                return original(self, dataset_kwargs, *args, **kwargs)
            except Exception as err:
                if not path or not (os.environ.get(ENV_VAR) or _offline()):
                    raise
                cause = getattr(getattr(err, "last_attempt", None), "exception", lambda: None)() or err
                looked = ", ".join(map(str, expected_copies(path, name))) or f"nowhere ({ENV_VAR} is unset)"
                raise FileNotFoundError(
                    f"cannot load dataset {path} ({name or 'default'}): no local copy (looked for {looked}) and "
                    f"the hub load failed ({type(cause).__name__}: {cause}). Make a copy with `lmms-ac mirror TASK "
                    f"--to DIR` where the hub is reachable and set {ENV_VAR}=DIR") from err
        from loguru import logger

        logger.info(f"lmms-ac: {path} loads from local copy {local}")
        self.DATASET_PATH = str(local)
        with _datasets_cache_off():  # nothing may be written into a mirror
            return original(self, {"load_from_disk": True}, *args, **kwargs)

    download._lmms_ac = True  # type: ignore[attr-defined]
    ConfigurableTask.download = download


# ---------------------------------------------------------------------------------- the TaskManager index
# lmms-eval 0.7.3 keeps a TaskManager's index in private attributes; these two functions are the only
# code of lmms-ac that reads or writes them (lmms_ac.robustness.index adds the generated tasks with them).
def task_index(task_manager) -> Mapping[str, Mapping[str, Any]]:
    """``task_manager``'s index: name -> ``{"type": task|group|tag, "yaml_path": ..., ["task": [...]]}``."""
    return task_manager._task_index


def add_to_task_index(task_manager, tasks: Mapping[str, str], tags: Mapping[str, Sequence[str]]
                      ) -> Tuple[List[str], List[str], int]:
    """Add ``tasks`` (name -> YAML path) and ``tags`` (tag -> task names) to ``task_manager``'s index.

    A name the index already has with another YAML (a user task) wins over ours and is returned as
    shadowed; tags list only our tasks and extend an existing tag. Returns (added, shadowed, number
    of tags registered)."""
    from loguru import logger

    index = task_manager._task_index
    added: List[str] = []
    shadowed: List[str] = []
    for name, path in tasks.items():
        existing = index.get(name)
        if existing is not None:
            if existing.get("yaml_path") != path:
                logger.debug(f"lmms-ac: task {name!r} already indexed ({existing.get('yaml_path')}); keeping it")
                shadowed.append(name)
            continue
        index[name] = {"type": "task", "yaml_path": path}
        added.append(name)
    ours = set(added)
    n_tags = 0
    for tag, names in tags.items():
        names = [n for n in names if n in ours]
        existing = index.get(tag)
        if existing is None:
            index[tag] = {"type": "tag", "task": list(names), "yaml_path": -1}
        elif existing.get("type") == "tag":
            existing["task"] = list(existing["task"]) + [n for n in names if n not in existing["task"]]
        else:
            logger.warning(f"lmms-ac: tag {tag!r} is already an lmms-eval {existing.get('type')}; not registered")
            continue
        n_tags += 1
    task_manager._all_tasks = sorted(index)
    task_manager._all_groups = sorted(k for k, v in index.items() if v["type"] == "group")
    task_manager._all_subtasks = sorted(k for k, v in index.items() if v["type"] == "task")
    task_manager._all_tags = sorted(k for k, v in index.items() if v["type"] == "tag")
    return added, shadowed, n_tags
