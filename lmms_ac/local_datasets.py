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
    return [
        copy_path(root, dataset_path, name)
        for root in mirror_dirs()
        for name in ([dataset_name] + ([None] if dataset_name else []))
    ]


def local_dataset(dataset_path: Optional[str], dataset_name: Optional[str] = None) -> Optional[Path]:
    """The mirror copy lmms-eval should load instead of the hub (the plugin's download hook), or None.

    A directory named by ``$LMMS_AC_DATASETS`` that does not exist is an error: a typo there would
    otherwise send every task to the hub."""
    missing = missing_mirror_dirs()
    if missing:
        raise FileNotFoundError(
            f"{ENV_VAR} names {', '.join(map(str, missing))}, which is not a directory; fix {ENV_VAR} "
            f"(directories separated by ':') or make the mirror with `lmms-ac mirror TASK... --to DIR`"
        )
    return find_local_copy(dataset_path, dataset_name)


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    )


def download_failed(dataset_path: Optional[str], dataset_name: Optional[str], cause: BaseException) -> Optional[str]:
    """What to say when a dataset with no local copy also failed to load from the hub: where copies were
    looked for and how to make one. None (lmms-eval's own error stands) unless mirrors are configured or
    the hub is switched off."""
    if not dataset_path or not (os.environ.get(ENV_VAR) or _offline()):
        return None
    looked = ", ".join(map(str, expected_copies(dataset_path, dataset_name))) or f"nowhere ({ENV_VAR} is unset)"
    return (
        f"cannot load dataset {dataset_path} ({dataset_name or 'default'}): no local copy (looked for {looked}) and "
        f"the hub load failed ({type(cause).__name__}: {cause}). Make a copy with `lmms-ac mirror TASK "
        f"--to DIR` where the hub is reachable and set {ENV_VAR}=DIR"
    )


def mirror_tasks(
    task_names: List[str], to: str, overwrite: bool = False, include_path: Optional[List[str]] = None
) -> Dict[str, Path]:
    """Download each task's dataset and save it under ``to`` with ``save_to_disk`` (atomic rename).

    ``to`` is checked to be writable before anything is downloaded; if this call created it and
    nothing was saved (offline, unknown dataset...), it is removed again."""
    from lmms_ac.io import check_writable
    from lmms_ac.plugin import task_dataset_configs

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

    from lmms_ac.io import check_replaceable

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
        # --overwrite replaces a dataset copy, never another folder that happens to have its name
        check_replaceable(target, ["dataset_dict.json", "state.json"], "a saved dataset copy", overwrite=True)
        kwargs = {
            k: v
            for k, v in cfg["dataset_kwargs"].items()
            if k in ("token", "revision", "data_files", "data_dir", "trust_remote_code")
        }
        logger.info(f"{task}: loading {cfg['dataset_path']} ({cfg['dataset_name'] or 'default'})")
        try:
            ds = datasets.load_dataset(cfg["dataset_path"], cfg["dataset_name"], **kwargs)
        except Exception as err:  # offline, gated, unknown repo...: one clear line, not a hub traceback
            raise ValueError(
                f"{task}: cannot download {cfg['dataset_path']} ({cfg['dataset_name'] or 'default'}): "
                f"{type(err).__name__}: {err}. Run `lmms-ac mirror` where the hub is reachable (and logged "
                f"in for gated datasets), or save a copy yourself with save_to_disk under {target}"
            ) from err
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
