"""lmms-eval entry point (group ``lmms_eval.models``). Imports nothing heavy at module level.

lmms-eval 0.7.3 loads entry points when ``lmms_eval.models`` is first imported, which happens
before its CLI builds the ``TaskManager``; yet it reads plugin task paths (``LMMS_EVAL_PLUGINS``)
only *after* building it, so plugin tasks are invisible without ``--include_path``. This module is
the one place that works around it: ``get_manifests`` (called by lmms-eval) also

1. wraps ``TaskManager.__init__`` so every TaskManager indexes ``lmms_ac.tasks`` too, plus the
   robustness variants generated from the catalogue (``lmms_ac.tasks.extend_task_index`` ->
   ``lmms_ac.robustness.tasks.extend_index``);
2. wraps ``ConfigurableTask.download`` so a task whose dataset has a local copy under
   ``$LMMS_AC_DATASETS`` loads it with ``load_from_disk`` (see ``lmms_ac.local_datasets``).

Both wrappers are idempotent and leave behaviour unchanged when nothing of ours applies.
"""
from __future__ import annotations

import functools
import os
from typing import List

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

    __init__._lmms_ac = True  # type: ignore[attr-defined]
    TaskManager.__init__ = __init__


def _patch_dataset_download() -> None:
    from lmms_eval.api.task import ConfigurableTask

    if getattr(ConfigurableTask.download, "_lmms_ac", False):
        return
    original = ConfigurableTask.download

    @functools.wraps(original)
    def download(self, dataset_kwargs=None, *args, **kwargs):
        from lmms_ac.local_datasets import find_local_copy

        local = find_local_copy(getattr(self, "DATASET_PATH", None), getattr(self, "DATASET_NAME", None))
        if local is not None:
            from loguru import logger

            logger.info(f"lmms-ac: {self.DATASET_PATH} loads from local copy {local}")
            self.DATASET_PATH = str(local)
            dataset_kwargs = {"load_from_disk": True}
        return original(self, dataset_kwargs, *args, **kwargs)

    download._lmms_ac = True  # type: ignore[attr-defined]
    ConfigurableTask.download = download
