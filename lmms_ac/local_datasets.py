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


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_part(text: str) -> str:
    """One path component: runs of other characters become ``__`` and leading dots ``_`` (so no
    ``..``, ``.`` or hidden name), never empty."""
    part = _UNSAFE.sub("__", text.strip().strip("/"))
    stripped = part.lstrip(".")
    part = "_" * (len(part) - len(stripped)) + stripped
    return part or "_"


def dataset_key(dataset_path: str, dataset_name: Optional[str] = None) -> str:
    """Directory name of a dataset's copy inside a mirror directory: always a single path component
    (a task's ``dataset_path``/``dataset_name`` cannot point outside the mirror)."""
    base = _safe_part(str(dataset_path))
    return f"{base}--{_safe_part(str(dataset_name))}" if dataset_name else base


def copy_path(root: Path, dataset_path: str, dataset_name: Optional[str] = None) -> Path:
    """``root/<key>``, checked to stay inside ``root``."""
    key = dataset_key(dataset_path, dataset_name)
    candidate = Path(os.path.abspath(root / key))
    if candidate.parent != Path(os.path.abspath(root)):
        raise ValueError(f"dataset {dataset_path!r} ({dataset_name}) maps to {candidate}, outside the mirror {root}")
    return candidate


def mirror_dirs() -> List[Path]:
    value = os.environ.get(ENV_VAR, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


def missing_mirror_dirs() -> List[Path]:
    """Directories named by ``$LMMS_AC_DATASETS`` that do not exist (or are not directories)."""
    return [d for d in mirror_dirs() if not d.is_dir()]


def _is_copy(candidate: Path) -> bool:
    return (candidate / "dataset_dict.json").is_file() or (candidate / "dataset_info.json").is_file()


def find_local_copy(dataset_path: Optional[str], dataset_name: Optional[str] = None) -> Optional[Path]:
    """The first mirror holding this dataset (with its name, or without a name as a fallback)."""
    if not dataset_path:
        return None
    names = [dataset_name] + ([None] if dataset_name else [])
    for root in mirror_dirs():
        for name in names:
            candidate = copy_path(root, dataset_path, name)
            if _is_copy(candidate):
                return candidate
    return None


def expected_copies(dataset_path: str, dataset_name: Optional[str] = None) -> List[Path]:
    """Where a copy of this dataset would be looked for, in order."""
    return [copy_path(root, dataset_path, name) for root in mirror_dirs()
            for name in ([dataset_name] + ([None] if dataset_name else []))]


def task_dataset_configs(task_names: List[str], include_path: Optional[List[str]] = None) -> Dict[str, Dict]:
    """task -> {dataset_path, dataset_name, dataset_kwargs} for tasks, expanding groups and tags."""
    from lmms_eval import utils
    from lmms_eval.tasks import TaskManager

    from lmms_ac.plugin import install_hooks

    install_hooks()  # our tasks (seed, seed_image...) and the generated robustness tasks, as lmms-eval sees them
    manager = TaskManager(verbosity="ERROR", include_path=include_path)
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
    """Download each task's dataset and save it under ``to`` with ``save_to_disk`` (atomic rename).

    ``to`` is checked to be writable before anything is downloaded; if this call created it and
    nothing was saved (offline, unknown dataset...), it is removed again."""
    from lmms_ac.io import check_writable

    root = Path(to).expanduser()
    check_writable(root, directory=True, what="mirror directory")
    configs = task_dataset_configs(task_names, include_path)
    created = _missing_ancestors(root)
    try:
        return _mirror(configs, root, overwrite)
    finally:
        for folder in created:  # deepest first; only folders that are still empty
            try:
                folder.rmdir()
            except OSError:
                break


def _missing_ancestors(path: Path) -> List[Path]:
    out = []
    while not path.exists():
        out.append(path)
        if path.parent == path:
            break
        path = path.parent
    return out


def _mirror(configs: Dict[str, Dict], root: Path, overwrite: bool) -> Dict[str, Path]:
    import datasets
    from loguru import logger

    done: Dict[str, Path] = {}
    for task, cfg in sorted(configs.items()):
        if not cfg["dataset_path"]:
            logger.warning(f"{task}: its config names no dataset_path; nothing to mirror")
            continue
        target = copy_path(root, cfg["dataset_path"], cfg["dataset_name"])
        if target in done.values():
            done[task] = target
            continue
        if target.exists() and not overwrite:
            logger.info(f"{task}: {target} exists, kept (pass --overwrite to replace)")
            done[task] = target
            continue
        kwargs = {k: v for k, v in cfg["dataset_kwargs"].items() if k in ("token", "revision", "data_files", "data_dir", "trust_remote_code")}
        logger.info(f"{task}: loading {cfg['dataset_path']} ({cfg['dataset_name'] or 'default'})")
        try:
            ds = datasets.load_dataset(cfg["dataset_path"], cfg["dataset_name"], **kwargs)
        except Exception as err:  # offline, gated, unknown repo...: one clear line, not a hub traceback
            raise ValueError(f"{task}: cannot download {cfg['dataset_path']} ({cfg['dataset_name'] or 'default'}): "
                             f"{type(err).__name__}: {err}. Run `lmms-ac mirror` where the hub is reachable (and logged "
                             f"in for gated datasets), or save a copy yourself with save_to_disk under {target}") from err
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
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
