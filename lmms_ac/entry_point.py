"""lmms-eval's entry point for lmms-ac (group ``lmms_eval.models``, see pyproject.toml): registers
``lmms_ac_llava`` and installs the hooks of ``lmms_ac.plugin`` (the adapter of lmms-eval internals) with
what our own code contributes to them. The top of the import drawing: nothing of lmms-ac imports it.
Imports nothing heavy at module level (lmms-eval loads it on every start)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

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
    )


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
