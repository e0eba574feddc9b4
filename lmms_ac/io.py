"""Atomic writes and provenance for every artifact the project produces."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Union

PathLike = Union[str, os.PathLike]


class OutputExistsError(FileExistsError):
    """An output already exists and the caller did not allow replacing it."""


def atomic_write_text(path: PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) atomically; refuse to replace an existing file unless ``overwrite``."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_bytes(path: PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` through a temp file + rename in the same folder; refuse to replace unless ``overwrite``.
    A symlink is written through (its target is replaced, the link stays); a folder is a ``ValueError``."""
    path = Path(path)
    if path.is_symlink():  # write through the link: replacing it would cut the user's link and leave its target stale
        path = Path(os.path.realpath(path))
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file path for the output (e.g. {path / 'out.csv'})")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another path or pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file 0600; an atomic replace must not change who can read the output
    mode = stat.S_IMODE(os.stat(path).st_mode) if path.exists() else 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


#: written into a folder an lmms-ac command fills (``prepare_output_dir``): what lets ``--overwrite`` empty it again
OUTPUT_MARKER = ".lmms-ac-output.json"


def prepare_output_dir(path: PathLike, command: str, *, overwrite: bool = False) -> Path:
    """Make ``path`` ready for ``command`` to fill, deleting nothing of the user's.

    A missing or empty folder is used (and marked with ``OUTPUT_MARKER``). A folder an earlier run of ``command``
    made (its marker) is refused unless ``overwrite``, then emptied: only when it holds nothing but what that run
    recorded (``seal_output_dir``; a run that stopped early recorded nothing, and its folder is all its own). Any
    other folder is refused, ``overwrite`` or not, with the fix. A symlink to a folder is written through (the link
    and the folder itself stay). Raises ``OutputExistsError`` or ``ValueError``."""
    path = Path(path).expanduser()
    marker = path / OUTPUT_MARKER
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder; choose a folder path for --out")
    if path.is_dir() and any(path.iterdir()):
        doc = _read_marker(marker)
        if doc is None or doc.get("command") != command:
            raise OutputExistsError(
                f"{path} is not empty and was not made by `lmms-ac {command}` (no {OUTPUT_MARKER} of it), so it is "
                f"never deleted, --overwrite or not; choose a new or empty folder for --out (the output of an "
                f"lmms-ac older than this marker: delete it yourself)"
            )
        if not overwrite:
            raise OutputExistsError(
                f"{path} holds the output of an earlier `lmms-ac {command}`; pass --overwrite to replace it, or "
                "choose another folder"
            )
        recorded = doc.get("entries")
        names = sorted(p.name for p in path.iterdir() if p.name != OUTPUT_MARKER)
        foreign = [n for n in names if isinstance(recorded, list) and n not in recorded]
        if foreign:
            raise OutputExistsError(
                f"{path} holds {', '.join(repr(n) for n in foreign[:5])}{' ...' if len(foreign) > 5 else ''}, which "
                f"`lmms-ac {command}` did not write; move it out of the folder (--overwrite replaces only what the "
                "command wrote), or choose another folder"
            )
        for name in names:
            entry = path / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps({"command": command, **provenance()}, indent=2) + "\n", overwrite=True)
    return path


def check_replaceable(path: PathLike, marks: Sequence[str], what: str, *, overwrite: bool) -> None:
    """Before a command replaces the folder ``path`` it writes (a dataset copy, a synthetic set): refuse when it
    exists and not ``overwrite`` (``OutputExistsError``), and, ``overwrite`` or not, when it holds none of the files
    ``marks`` that the command itself writes there (``ValueError``): a folder of the user's is never deleted."""
    path = Path(path)
    if not path.exists():
        return
    if not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
    if not path.is_dir() or not any((path / m).exists() for m in marks):
        raise ValueError(
            f"{path} exists but is not {what} (it has no {' or '.join(marks)}), so --overwrite will not delete it; "
            "move it away or choose another folder"
        )


def seal_output_dir(path: PathLike, command: str) -> None:
    """Record in the folder's marker what ``command`` wrote into ``path`` (its top-level entries), at the end of a
    run: ``prepare_output_dir`` later deletes those and refuses to delete anything added since."""
    path = Path(path)
    doc = _read_marker(path / OUTPUT_MARKER) or {"command": command}
    doc["entries"] = sorted(p.name for p in path.iterdir() if p.name != OUTPUT_MARKER)
    atomic_write_text(path / OUTPUT_MARKER, json.dumps(doc, indent=2) + "\n", overwrite=True)


def _read_marker(marker: Path) -> Optional[Dict[str, Any]]:
    try:
        doc = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # fallback: set and restore (not thread-safe, but only where /proc lacks it)
    os.umask(mask)
    return mask


def check_writable(path: PathLike, *, directory: bool = False, what: str = "output") -> Path:
    """Fail now, before any work, if ``path`` (a file, or with ``directory`` a folder) cannot be written.

    Creates nothing that stays: the nearest existing ancestor must be a writable directory (probed
    by creating and removing a temporary file, so it also holds for root on a read-only mount), and
    an existing ``path`` must be a file (a folder with ``directory``) that the user may write.
    Raises ``ValueError`` naming the path and the reason."""
    path = Path(path).expanduser()
    if path.exists():
        if directory and not path.is_dir():
            raise ValueError(f"{what} {path} exists and is not a directory; choose another path")
        if not directory and path.is_dir():
            raise ValueError(f"{what} {path} is a directory; give a file path")
        if not os.access(path, os.W_OK):
            raise ValueError(
                f"{what} {path} is not writable (permissions {stat.filemode(os.stat(path).st_mode)}); "
                "choose another path or fix its permissions"
            )
    probe_dir = path if (directory and path.is_dir()) else path.parent
    ancestor = probe_dir
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot write {what} {path}: {ancestor} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lmms_ac_write_probe.", dir=str(ancestor))
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(
            f"cannot write {what} {path}: {ancestor} is not writable ({err.strerror or err}); "
            "choose another path or fix its permissions"
        ) from None
    return path


@contextlib.contextmanager
def exit_on_terminate() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into ``SystemExit`` while the block runs, so ``finally`` blocks and
    context managers (temporary folders, claims, locks) clean up when a job is cancelled (a batch
    scheduler sends SIGTERM). Only SIGKILL cannot be caught. No-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):  # noqa: ARG001
        raise SystemExit(128 + signum)

    previous = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
            previous[sig] = signal.signal(sig, _exit)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
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
