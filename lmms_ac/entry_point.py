"""lmms-eval's entry point for lmms-ac (group ``lmms_eval.models``, see pyproject.toml): registers
``lmms_ac_llava`` and installs the hooks of ``lmms_ac.plugin`` (the adapter of lmms-eval internals) with
what our own code contributes to them. The top of the import drawing: nothing of lmms-ac imports it.
Imports nothing heavy at module level (lmms-eval loads it on every start)."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

from lmms_ac import plugin


def get_manifests() -> List[Any]:
    """Called by lmms-eval when it first imports ``lmms_eval.models``."""
    plugin.install_hooks(hooks())
    return plugin.manifests()


def hooks() -> plugin.Hooks:
    from lmms_ac.local_datasets import download_failed, local_dataset

    return plugin.Hooks(
        task_dirs=_task_dirs,
        extend_task_index=_extend_task_index,
        local_dataset=local_dataset,
        download_failed=download_failed,
        finish_results=_finish_results,
        task_dir_index=task_dir_index,
    )


def task_dir_index(task_dir: str, compute: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """One task folder's TaskManager index, cached as JSON under ``$LMMS_AC_CACHE/task_dirs`` keyed by the
    folder's fingerprint (each YAML's relative path, size and mtime) and lmms-eval's version: a listing
    and a ``stat`` per file instead of parsing every YAML. Unwritable cache or unusual index: computed."""
    import hashlib
    import json

    from lmms_ac.robustness.task_cache import cache_root, package_version

    files = []
    for root, dirs, names in os.walk(task_dir):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".ipynb_checkpoints"))
        for name in sorted(names):
            if name.endswith(".yaml"):
                st = os.stat(os.path.join(root, name))
                files.append((os.path.relpath(os.path.join(root, name), task_dir), st.st_size, st.st_mtime_ns))
    key = json.dumps([package_version("lmms_eval"), os.path.abspath(task_dir), files])
    path = cache_root().parent / "task_dirs" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    index = compute()
    try:
        text = json.dumps(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        pass  # not cacheable here: computed again next time
    return index


def _task_dirs() -> List[str]:
    import lmms_ac.tasks

    return [os.path.dirname(os.path.abspath(lmms_ac.tasks.__file__))]


def _extend_task_index(index: plugin.TaskManagerIndex) -> Any:
    """The generated robustness tasks into one TaskManager's index (None when the cache is unwritable)."""
    from lmms_ac.robustness.index import extend_index

    try:
        return extend_index(index)
    except OSError as err:  # an unwritable cache must not break lmms-eval for every other task
        from loguru import logger

        logger.warning(
            f"lmms-ac: robustness tasks are unavailable: cannot write their generated YAMLs ({err}); "
            "set LMMS_AC_CACHE to a writable directory"
        )
        return None


def _finish_results(results: Optional[Dict[str, Any]], lm: Any) -> None:
    if getattr(lm, "hook_factory", None) is None:
        return  # another lmms-eval model: nothing of ours to add (and nothing to import)
    from lmms_ac.results.stamp import finish_results

    finish_results(results, lm)
