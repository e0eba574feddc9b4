"""Local copies of lmms-eval task datasets, for offline clusters.

A *mirror directory* holds one ``datasets.save_to_disk`` copy per dataset, named by the task's
``dataset_path`` (and ``dataset_name`` when set): ``lmms-lab/MME`` -> ``lmms-lab__MME``,
``lmms-lab/MMBench`` with name ``en`` -> ``lmms-lab__MMBench--en``. Point lmms-eval at mirrors with

    export LMMS_AC_DATASETS=/data/lmms_mirror[:/other/mirror]

and every task, built-in or ours, whose dataset has a copy there loads it with ``load_from_disk``
instead of the hub (the redirect is installed by the plugin hook, ``lmms_ac.plugin``). Make copies
on a machine with a hub with ``lmms-ac mirror TASK... --to DIR``.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

ENV_VAR = "LMMS_AC_DATASETS"


def dataset_key(dataset_path: str, dataset_name: Optional[str] = None) -> str:
    """Directory name of a dataset's copy inside a mirror directory."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "__", dataset_path.strip("/"))
    return f"{base}--{dataset_name}" if dataset_name else base


def mirror_dirs() -> List[Path]:
    value = os.environ.get(ENV_VAR, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


def find_local_copy(dataset_path: Optional[str], dataset_name: Optional[str] = None) -> Optional[Path]:
    """The first mirror holding this dataset (with its name, or without a name as a fallback)."""
    if not dataset_path:
        return None
    keys = [dataset_key(dataset_path, dataset_name)] + ([dataset_key(dataset_path)] if dataset_name else [])
    for root in mirror_dirs():
        for key in keys:
            candidate = root / key
            if (candidate / "dataset_dict.json").is_file() or (candidate / "dataset_info.json").is_file():
                return candidate
    return None


def task_dataset_configs(task_names: List[str], include_path: Optional[List[str]] = None) -> Dict[str, Dict]:
    """task -> {dataset_path, dataset_name, dataset_kwargs} for tasks, expanding groups and tags."""
    from lmms_eval.tasks import TaskManager
    from lmms_eval import utils

    manager = TaskManager(include_path=include_path)
    missing = [t for t in task_names if t not in manager.all_tasks]
    if missing:
        import difflib

        hints = {m: difflib.get_close_matches(m, manager.all_tasks, n=3) for m in missing}
        raise ValueError("unknown task(s): " + "; ".join(f"{m!r}" + (f" (did you mean {', '.join(h)}?)" if h else "") for m, h in hints.items()))
    out: Dict[str, Dict] = {}
    pending = list(task_names)
    while pending:
        name = pending.pop()
        entry = manager.task_index[name]
        if entry["type"] == "tag":
            pending += list(entry["task"])
            continue
        config = utils.load_yaml_config(entry["yaml_path"], mode="simple")
        if entry["type"] == "group":
            pending += [t if isinstance(t, str) else t["task"] for t in config.get("task", [])]
            continue
        out[name] = {"dataset_path": config.get("dataset_path"), "dataset_name": config.get("dataset_name"),
                     "dataset_kwargs": dict(config.get("dataset_kwargs") or {})}
    return out


def mirror_tasks(task_names: List[str], to: str, overwrite: bool = False, include_path: Optional[List[str]] = None) -> Dict[str, Path]:
    """Download each task's dataset and save it under ``to`` with ``save_to_disk`` (atomic rename)."""
    import datasets
    from loguru import logger

    root = Path(to).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    done: Dict[str, Path] = {}
    for task, cfg in sorted(task_dataset_configs(task_names, include_path).items()):
        key = dataset_key(cfg["dataset_path"], cfg["dataset_name"])
        target = root / key
        if key in {p.name for p in done.values()}:
            done[task] = target
            continue
        if target.exists() and not overwrite:
            logger.info(f"{task}: {target} exists, kept (pass --overwrite to replace)")
            done[task] = target
            continue
        kwargs = {k: v for k, v in cfg["dataset_kwargs"].items() if k in ("token", "revision", "data_files", "data_dir", "trust_remote_code")}
        logger.info(f"{task}: loading {cfg['dataset_path']} ({cfg['dataset_name'] or 'default'})")
        ds = datasets.load_dataset(cfg["dataset_path"], cfg["dataset_name"], **kwargs)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            ds.save_to_disk(str(tmp / "data"))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp / "data", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info(f"{task}: saved to {target}")
        done[task] = target
    return done
