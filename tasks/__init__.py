"""lmms-eval task YAMLs of lmms-ac (installed as ``lmms_ac.tasks``) and the generated index of
robustness variants. The plugin hook (``lmms_ac.plugin``) makes every TaskManager index this folder."""
from __future__ import annotations


def extend_task_index(task_manager) -> None:
    """Add catalogue-generated robustness tasks to ``task_manager``'s index."""
    from lmms_ac.robustness.index import extend_index

    try:
        extend_index(task_manager)
    except OSError as err:  # an unwritable cache must not break lmms-eval for every other task
        from loguru import logger

        logger.warning(f"lmms-ac: robustness tasks are unavailable: cannot write their generated YAMLs ({err}); "
                       "set LMMS_AC_CACHE to a writable directory")
