"""The synthetic images at evaluation time: where ``lmms-ac synthesize`` put them and how the
``<base>_synthetic`` task finds the regenerated image of each source image.

Layout: ``<root>/<base task>/`` (seed 0; seed k: ``<root>/<base task>_s<k>/``) is a
``datasets.save_to_disk`` dataset with one row per distinct source image:

=================  =====================================================================
``key``            :func:`store_key` of the source image (mode, size, pixels): how the task finds it
``doc_ids``        indices (in the task's evaluation order) of the documents that show it
``image``          the regenerated image (JPEG)
``caption``        the caption it was generated from
``clip_similarity``  CLIP image-image cosine similarity of source vs regenerated
``width/height``   the source image's size
=================  =====================================================================

plus ``synthesis.json`` (models, steps, seed, limit, similarity summary, provenance). Keys are
content hashes, so the task's ``doc_to_visual`` (:func:`synthetic_visuals`) needs no document id and
a document whose image was not synthesized (``--limit``) is an error, never a silent clean image.
The generator is :mod:`lmms_ac.robustness.synthesis`. Only ``datasets`` is imported, when a store loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Union

SYNTHETIC_ENV = "LMMS_AC_SYNTHETIC"
INFO_FILE = "synthesis.json"


def store_key(image: Any) -> str:
    """The key of a source image in a synthetic store: SHA-1 of its mode, size and pixels, first 24
    hex digits. Written into every store's ``key`` column, so it never changes (it is not
    :func:`lmms_ac.vlm.prefix_cache.image_key`, an in-memory SHA-256 that also covers preprocessing)."""
    h = hashlib.sha1()
    h.update(f"{image.mode}|{image.size[0]}x{image.size[1]}|".encode())
    h.update(image.tobytes())
    return h.hexdigest()[:24]


def synthetic_root(root: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    """``root``, else ``$LMMS_AC_SYNTHETIC``, else None."""
    value = root if root is not None else os.environ.get(SYNTHETIC_ENV)
    return Path(value).expanduser() if value else None


def synthetic_dir(base: str, seed: int = 0, root: Optional[Union[str, os.PathLike]] = None) -> Path:
    """``<root>/<base>`` (seed 0) or ``<root>/<base>_s<seed>``; root defaults to ``$LMMS_AC_SYNTHETIC``."""
    r = synthetic_root(root)
    if r is None:
        raise FileNotFoundError(f"{SYNTHETIC_ENV} is not set")
    return r / (base if int(seed) == 0 else f"{base}_s{int(seed)}")


def synthesize_command(base: str, seed: int, root: Any = "DIR") -> str:
    """The command that makes the store of ``base`` (quoted in error messages)."""
    return f"lmms-ac synthesize {base} --to {root}" + (f" --seed {seed}" if seed else "")


class SyntheticStore:
    """The regenerated images of one base task, looked up by source-image key."""

    def __init__(self, directory: Union[str, os.PathLike]):
        import datasets

        self.directory = Path(directory)
        self.dataset = datasets.load_from_disk(str(self.directory))
        self.rows = {k: i for i, k in enumerate(self.dataset["key"])}
        info_path = self.directory / INFO_FILE
        self.info = json.loads(info_path.read_text()) if info_path.is_file() else {}

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, key: str) -> Dict[str, Any]:
        return self.dataset[self.rows[key]]

    def lookup(self, image, task: str = "") -> Any:
        key = store_key(image)
        if key not in self.rows:
            limit = self.info.get("limit")
            command = synthesize_command(
                self.info.get("base", "<task>"), int(self.info.get("seed", 0) or 0), self.directory.parent
            )
            raise KeyError(
                f"{task or 'synthetic task'}: an image of this document is not in the synthetic set {self.directory} "
                f"({len(self.rows)} images{f', made with --limit {limit}' if limit else ''}); rerun "
                f"`{command}` "
                "without --limit (or evaluate with a --limit no larger than the one used)"
            )
        return self.dataset[self.rows[key]]["image"].convert("RGB")


# one store per folder per process (a task's documents all read the same one)
_STORES: Dict[str, SyntheticStore] = {}
_LOCK = threading.RLock()


def load_store(
    base: str, seed: int = 0, task: str = "", root: Optional[Union[str, os.PathLike]] = None
) -> SyntheticStore:
    """The store of ``base`` (cached per process); a clear error naming the command when missing."""
    task = task or f"{base}_synthetic"
    r = synthetic_root(root)
    if r is None:
        raise FileNotFoundError(
            f"task {task!r} evaluates on regenerated images, but {SYNTHETIC_ENV} is not set. Make them with "
            f"`{synthesize_command(base, seed)}`, then `export {SYNTHETIC_ENV}=DIR`"
        )
    directory = synthetic_dir(base, seed, r)
    with _LOCK:
        key = str(directory.resolve())
        if key not in _STORES:
            if not ((directory / "dataset_info.json").is_file() or (directory / "dataset_dict.json").is_file()):
                raise FileNotFoundError(
                    f"task {task!r} needs the synthetic images of {base!r} at {directory}, which do not exist; make "
                    f"them with `{synthesize_command(base, seed, r)}`"
                )
            _STORES[key] = SyntheticStore(directory)
        return _STORES[key]


def forget_store(directory: Union[str, os.PathLike]) -> None:
    """Drop the cached store of ``directory`` (its files were just replaced)."""
    with _LOCK:
        _STORES.pop(str(Path(directory).resolve()), None)


def synthetic_visuals(base: str, visuals: Any, seed: int = 0, task: str = "") -> Any:
    """``doc_to_visual`` of ``<base>_synthetic``: each source image replaced by its regenerated one."""
    if not visuals:
        return visuals
    store = load_store(base, seed, task)
    out = []
    for v in visuals:
        if not hasattr(v, "tobytes"):
            raise TypeError(f"{task or base}: synthetic images replace PIL images only, got {type(v).__name__}")
        out.append(store.lookup(v, task))
    return out


__all__ = [
    "SYNTHETIC_ENV",
    "INFO_FILE",
    "store_key",
    "synthetic_root",
    "synthetic_dir",
    "synthesize_command",
    "SyntheticStore",
    "load_store",
    "forget_store",
    "synthetic_visuals",
]
