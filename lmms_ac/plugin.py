"""The one adapter between lmms-ac and lmms-eval's internals: every lmms-eval name lmms-ac reads, calls or
patches is here, so a new lmms-eval release is one file to check. It imports no other lmms-ac module
(what our code contributes to the patched functions arrives as :class:`Hooks`, wired by
``lmms_ac.entry_point``) and nothing heavy at module level.

lmms-eval 0.7.3 loads entry points when ``lmms_eval.models`` is first imported, which happens
before its CLI builds the ``TaskManager``; yet it reads plugin task paths (``LMMS_EVAL_PLUGINS``)
only *after* building it, so plugin tasks are invisible without ``--include_path``. The entry point
therefore installs these hooks (all idempotent, behaviour unchanged when nothing of ours applies):

1. ``TaskManager.__init__`` indexes ``lmms_ac.tasks`` too, plus the robustness variants generated from
   the catalogue (``Hooks.extend_task_index``, given the index through :class:`TaskManagerIndex`);
2. ``ConfigurableTask.download`` loads a task's dataset from a local copy under ``$LMMS_AC_DATASETS``
   with ``load_from_disk`` (``Hooks.local_dataset``), with the ``datasets`` cache off while the task
   processes its docs: a ``filter``/``map`` of a task's ``process_docs`` writes its cache files to a
   temporary folder, never into the (possibly read-only or shared) mirror. A mirror directory that does
   not exist, or a dataset found neither in the mirrors nor on the hub, fails with a message that says so
   (``Hooks.download_failed``) instead of tenacity's RetryError;
3. ``lmms_eval.api.instance.unwrap_generation_output``: lmms-eval 0.7.3's evaluator passes every response
   through it, and it turns a loglikelihood response ``(logprob, is_greedy)`` into the string
   ``"(-5.8, False)"``, which breaks every ``loglikelihood`` and ``multiple_choice`` task
   (``process_results`` cannot unpack it). Such pairs are passed through unchanged; everything else goes
   to lmms-eval's function;
4. ``ConfigurableTask.process_results`` (built-in scoring only; a task's own ``process_results`` is left
   alone): for ``loglikelihood`` tasks it hands over the doc's one response (lmms-eval unpacks the list of
   responses, which fails); the ``multiple_choice`` scoring takes the *argmin* of the responses: it
   expects losses (what lmms-eval's own models return), whereas its documented contract
   (``lmms.loglikelihood``), lm-eval-harness and ``lmms_ac_llava`` return log-probabilities. A
   log-probability is <= 0 and a loss >= 0, so responses that are all <= 0 are negated before that
   scoring: either convention picks the most likely choice (``acc_mutual_info``, an argmax of
   differences, keeps the log-probabilities it was written for);
5. ``lmms_eval.evaluator.evaluate`` passes its results and model to ``Hooks.finish_results`` (what
   ``lmms_ac_llava`` measured while it ran: the cells PatchDrop removed, a model-argument perturbation);
6. ``ConfigurableTask.__init__`` reads doc 0 to check the prompt, which decodes its images: when reading doc
   0 fails (an image that cannot be decoded, a decompression bomb), the error names the task, split and doc
   instead of Pillow's bare ``cannot identify image file``;
7. ``TaskManager._get_task_and_group`` (the index of one task folder: lmms-eval parses each of its ~2000
   YAMLs on every start, seconds of it) goes through ``Hooks.task_dir_index``, which reuses a copy
   cached under the folder's fingerprint (every YAML's path, size and mtime, and lmms-eval's version).

Below the hooks: the adapter functions the rest of lmms-ac uses instead of lmms-eval's internals
(a TaskManager with our tasks, its index, task YAMLs and objects, the model API).
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

MODEL_ID = "lmms_ac_llava"
MODEL_CLASS = "lmms_ac.models.lmms_ac_llava.LmmsAcLlava"


@dataclass(frozen=True)
class Hooks:
    """What lmms-ac's own code contributes to the patched lmms-eval functions."""

    #: folders every TaskManager indexes besides its ``include_path``
    task_dirs: Callable[[], List[str]]
    #: adds generated tasks to a TaskManager's index; its return value is kept as ``tm._lmms_ac_robustness``
    extend_task_index: Callable[["TaskManagerIndex"], Any]
    #: (dataset_path, dataset_name) -> a local ``save_to_disk`` copy to load instead, or None; raises
    #: FileNotFoundError (with the fix) when the mirror setting itself is broken
    local_dataset: Callable[[Optional[str], Optional[str]], Optional[str]]
    #: (dataset_path, dataset_name, cause) -> the message of the FileNotFoundError replacing a failed hub
    #: load, or None to re-raise lmms-eval's own error
    download_failed: Callable[[Optional[str], Optional[str], BaseException], Optional[str]]
    #: (results, lm): adds what the model measured to ``evaluate``'s results, in place
    finish_results: Callable[[Optional[Dict[str, Any]], Any], None]
    #: (task_dir, compute) -> the TaskManager's index of one task folder, ``compute()`` or a cached copy
    #: of it (lmms-eval parses every YAML of its ~2000 on each start); None: always computed
    task_dir_index: Optional[Callable[[str, Callable[[], Dict[str, Any]]], Dict[str, Any]]] = None


def manifests() -> List[Any]:
    """lmms-eval's manifest of ``lmms_ac_llava`` (imported lazily by lmms-eval from ``MODEL_CLASS``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS, aliases=("lmms_ac",))]


def install_hooks(hooks: Hooks) -> None:
    """Patch lmms-eval (once per process: the first ``hooks`` stay)."""
    _patch_task_manager(hooks)
    _patch_task_dir_index(hooks)
    _patch_dataset_download(hooks)
    _patch_task_init()
    _patch_unwrap_generation_output()
    _patch_multiple_choice_scoring()
    _patch_evaluate_results(hooks)


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
    return (
        isinstance(output, tuple)
        and len(output) == 2
        and isinstance(output[0], numbers.Real)
        and not isinstance(output[0], bool)
        and isinstance(output[1], (bool, getattr(sys.modules.get("numpy"), "bool_", bool)))
    )


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


def _patch_evaluate_results(hooks: Hooks) -> None:
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
        hooks.finish_results(out, kwargs.get("lm", args[0] if args else None))
        return out

    evaluate._lmms_ac = True  # type: ignore[attr-defined]
    evaluator.evaluate = evaluate


def _as_list(include_path) -> List[str]:
    if include_path is None:
        return []
    return [include_path] if isinstance(include_path, str) else list(include_path)


def _patch_task_manager(hooks: Hooks) -> None:
    from lmms_eval.tasks import TaskManager

    if getattr(TaskManager.__init__, "_lmms_ac", False):
        return
    original = TaskManager.__init__

    @functools.wraps(original)
    def __init__(self, verbosity="INFO", include_path=None, include_defaults=True, model_name=None, **kwargs):
        paths = _as_list(include_path)
        paths += [d for d in hooks.task_dirs() if d not in paths]
        original(
            self, verbosity, include_path=paths, include_defaults=include_defaults, model_name=model_name, **kwargs
        )
        self._lmms_ac_robustness = hooks.extend_task_index(TaskManagerIndex(self))  # ours: what the hook did
        _patch_evaluate_results(hooks)  # the CLI builds its TaskManager before it evaluates

    __init__._lmms_ac = True  # type: ignore[attr-defined]
    TaskManager.__init__ = __init__


def _patch_task_dir_index(hooks: Hooks) -> None:
    """``TaskManager._get_task_and_group(task_dir)`` (one folder's index) through ``hooks.task_dir_index``."""
    from lmms_eval.tasks import TaskManager

    original = TaskManager._get_task_and_group
    if hooks.task_dir_index is None or getattr(original, "_lmms_ac", False):
        return

    @functools.wraps(original)
    def _get_task_and_group(self, task_dir: str):
        return hooks.task_dir_index(task_dir, lambda: original(self, task_dir))

    _get_task_and_group._lmms_ac = True  # type: ignore[attr-defined]
    TaskManager._get_task_and_group = _get_task_and_group


def _patch_dataset_download(hooks: Hooks) -> None:
    from lmms_eval.api.task import ConfigurableTask

    if getattr(ConfigurableTask.download, "_lmms_ac", False):
        return
    original = ConfigurableTask.download

    @functools.wraps(original)
    def download(self, dataset_kwargs=None, *args, **kwargs):
        path, name = getattr(self, "DATASET_PATH", None), getattr(self, "DATASET_NAME", None)
        local = hooks.local_dataset(path, name)
        if local is None:
            try:
                return original(self, dataset_kwargs, *args, **kwargs)
            except Exception as err:
                # lmms-eval retries the hub with tenacity: the cause is the last attempt's exception
                cause = getattr(getattr(err, "last_attempt", None), "exception", lambda: None)() or err
                message = hooks.download_failed(path, name, cause)
                if message is None:
                    raise
                raise FileNotFoundError(message) from err
        from loguru import logger

        logger.info(f"lmms-ac: {path} loads from local copy {local}")
        self.DATASET_PATH = str(local)
        with _datasets_cache_off():  # nothing may be written into a mirror
            return original(self, {"load_from_disk": True}, *args, **kwargs)

    download._lmms_ac = True  # type: ignore[attr-defined]
    ConfigurableTask.download = download


def _patch_task_init() -> None:
    from lmms_eval.api.task import ConfigurableTask

    if getattr(ConfigurableTask.__init__, "_lmms_ac", False):
        return
    original = ConfigurableTask.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        except Exception as err:
            docs = getattr(self, "task_docs", None)
            if docs is None:
                raise
            try:
                docs[0]
            except Exception:  # doc 0 itself cannot be read: name it
                config = getattr(self, "config", None)
                task = getattr(config, "task", None)
                split = getattr(config, "test_split", None) or getattr(config, "validation_split", None)
                raise ValueError(
                    f"task {task!r} split {split!r} doc 0 cannot be read ({type(err).__name__}: {err}); lmms-eval "
                    "reads it while building the task, usually an image that cannot be decoded. Fix or drop this "
                    f"doc (`lmms-ac datasets --verify {task}` lists every bad doc)"
                ) from err
            raise

    __init__._lmms_ac = True  # type: ignore[attr-defined]
    ConfigurableTask.__init__ = __init__


# ======================================================================= adapter functions for lmms-ac
def task_manager(include_path: Optional[Sequence[str]] = None, verbosity: str = "ERROR") -> Any:
    """A TaskManager as the lmms-eval CLI builds one: our tasks, the generated robustness tasks and the
    ``$LMMS_AC_DATASETS`` redirect included (importing ``lmms_eval.models`` loads our entry point, which
    installs the hooks)."""
    import lmms_eval.models  # noqa: F401
    from lmms_eval.tasks import TaskManager

    if not include_path:
        return TaskManager(verbosity=verbosity)
    try:
        return TaskManager(verbosity=verbosity, include_path=list(include_path))
    except AssertionError:  # a check's failure (e.g. a test's guard), not a damaged task file
        raise
    except Exception as err:  # noqa: BLE001 - lmms-eval reads every YAML under the folders; a bad one raises anything
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(
            f"lmms-eval cannot read the task YAMLs under --include-path {', '.join(map(str, include_path))} "
            f"({type(err).__name__}: {first}); fix or remove the damaged file (task YAMLs are UTF-8 text)"
        ) from None


def load_tasks(names: Sequence[str], manager: Any) -> Dict[str, Any]:
    """lmms-eval's task objects of ``names`` (a group maps to a dict of its tasks)."""
    from lmms_eval.tasks import get_task_dict

    return get_task_dict(list(names), manager)


def load_task_or_group(names: Sequence[str], manager: Any) -> Dict[str, Any]:
    """``names`` built as the TaskManager builds them (a group maps to a dict of its tasks)."""
    return manager.load_task_or_group(list(names))


def load_task_yaml(path: str, mode: str = "simple") -> Dict[str, Any]:
    """A task YAML as lmms-eval reads it (``mode="full"`` resolves ``!function`` and ``include``)."""
    from lmms_eval import utils

    return utils.load_yaml_config(path, mode=mode)


def require_tasks(manager: Any, names: Sequence[str]) -> None:
    """A ValueError naming each of ``names`` that ``manager`` does not index, with close matches."""
    import difflib

    missing = [t for t in names if t not in manager.all_tasks]
    if missing:
        hints = {m: difflib.get_close_matches(m, manager.all_tasks, n=3) for m in missing}
        raise ValueError(
            "unknown task(s): "
            + "; ".join(f"{m!r}" + (f" (did you mean {', '.join(h)}?)" if h else "") for m, h in hints.items())
        )


def task_dataset_configs(task_names: Sequence[str], include_path: Optional[Sequence[str]] = None) -> Dict[str, Dict]:
    """task -> {dataset_path, dataset_name, dataset_kwargs} for tasks, expanding groups and tags; an unknown
    name is a ValueError with "did you mean"."""
    manager = task_manager(include_path)
    require_tasks(manager, task_names)
    out: Dict[str, Dict] = {}
    pending = list(task_names)
    while pending:
        name = pending.pop()
        entry = manager.task_index[name]
        if entry["type"] == "tag":
            pending += list(entry["task"])
            continue
        config = load_task_yaml(entry["yaml_path"])
        if entry["type"] == "group":
            pending += [t if isinstance(t, str) else t["task"] for t in config.get("task", [])]
            continue
        out[name] = {
            "dataset_path": config.get("dataset_path"),
            "dataset_name": config.get("dataset_name"),
            "dataset_kwargs": dict(config.get("dataset_kwargs") or {}),
        }
    return out


def builtin_task_module(task_folder: str) -> Any:
    """The ``utils`` module of one of lmms-eval's own task folders (e.g. ``seedbench``), for task YAMLs
    of ours that reuse its functions."""
    import importlib

    return importlib.import_module(f"lmms_eval.tasks.{task_folder}.utils")


def __getattr__(name: str) -> Any:
    """lmms-eval's model API, imported on first use: ``ModelBase`` (the class an lmms-eval model derives
    from), ``Instance`` (a request) and ``Collator`` (its length-sorted batching)."""
    if name == "ModelBase":
        from lmms_eval.api.model import lmms

        return lmms
    if name == "Instance":
        from lmms_eval.api.instance import Instance

        return Instance
    if name == "Collator":
        from lmms_eval.utils import Collator

        return Collator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TaskManagerIndex:
    """A TaskManager's index, read and extended. lmms-eval 0.7.3 keeps it in private attributes; this
    class is the only code of lmms-ac that reads or writes them."""

    def __init__(self, task_manager: Any) -> None:
        self.task_manager = task_manager

    def entries(self) -> Mapping[str, Mapping[str, Any]]:
        """name -> ``{"type": task|group|tag, "yaml_path": ..., ["task": [...]]}``."""
        return self.task_manager._task_index

    def add(self, tasks: Mapping[str, str], tags: Mapping[str, Sequence[str]]) -> Tuple[List[str], List[str], int]:
        """Add ``tasks`` (name -> YAML path) and ``tags`` (tag -> task names).

        A name the index already has with another YAML (a user task) wins over ours and is returned as
        shadowed; tags list only our tasks and extend an existing tag. Returns (added, shadowed, number
        of tags registered)."""
        from loguru import logger

        tm = self.task_manager
        index = tm._task_index
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
        tm._all_tasks = sorted(index)
        tm._all_groups = sorted(k for k, v in index.items() if v["type"] == "group")
        tm._all_subtasks = sorted(k for k, v in index.items() if v["type"] == "task")
        tm._all_tags = sorted(k for k, v in index.items() if v["type"] == "tag")
        return added, shadowed, n_tags
