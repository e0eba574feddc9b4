"""Atomic writes and provenance for every artifact the project produces."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional, Union

PathLike = Union[str, os.PathLike]


class OutputExistsError(FileExistsError):
    """An output already exists and the caller did not allow replacing it."""


def atomic_write_text(path: PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) atomically; refuse to replace an existing file unless ``overwrite``."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_bytes(path: PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` through a temp file + rename in the same folder; refuse to replace unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another path or pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def config_hash(config: Any) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _version(dist: str) -> Optional[str]:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_commit(cwd: Optional[PathLike] = None) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance(config: Any = None, **extra: Any) -> Dict[str, Any]:
    """Versions, git commit, config hash and any extra fields (seeds...) for an artifact."""
    info: Dict[str, Any] = {
        "lmms_ac_version": _version("lmms-ac"),
        "lmms_eval_version": _version("lmms-eval"),
        "torch_version": _version("torch"),
        "transformers_version": _version("transformers"),
        "git_commit": git_commit(),
    }
    if config is not None:
        info["config_hash"] = config_hash(config)
    info.update(extra)
    return info
