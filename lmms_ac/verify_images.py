"""``lmms-ac datasets --verify``: decode every image of a task strictly and list the bad docs.

lmms-eval sets Pillow's ``LOAD_TRUNCATED_IMAGES``, so a truncated image is scored silently as a
half-grey picture. Here each image's stored bytes (or file) are decoded with that flag off; the
docs are the task's evaluation docs after ``process_docs``, so ``doc_id`` is the one lmms-eval logs.
Images are read from the Arrow data without the ``datasets`` decoder and nothing is written.

An image Pillow refuses as a decompression bomb, or only warns about (over ``Image.MAX_IMAGE_PIXELS``), is
a bad doc like a truncated one. lmms-eval reads doc 0 of each task while building it; so that a bad image
there is reported rather than stopping the check, the tasks are built with undecodable images replaced by a
1x1 placeholder (``placeholder_for_undecodable``); the report itself reads the stored bytes.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Type

ID_FIELDS = ("question_id", "id", "index", "idx", "data_id", "image_id")


def decode_errors() -> Tuple[Type[BaseException], ...]:
    """What Pillow raises on an image it cannot decode: damaged data (``OSError``, ``SyntaxError``, ``ValueError``,
    ``EOFError``, ``struct.error``) and decompression bombs (the warning counts where it is raised as an error)."""
    from PIL import Image

    return (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        struct.error,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    )


@dataclass
class BadImage:
    doc_id: int
    column: str
    position: Optional[int]  # index inside a list-of-images column
    ident: str  # the doc's own id field (question_id...), when it has one
    reason: str


@dataclass
class TaskImages:
    task: str
    split: str
    docs: int = 0
    images: int = 0
    columns: List[str] = field(default_factory=list)
    bad: List[BadImage] = field(default_factory=list)


def decode_error(item: Any) -> Optional[str]:
    """Why an image cell (``{"bytes", "path"}``) does not decode strictly, or ``None`` when it does."""
    from PIL import Image, ImageFile

    data = item.get("bytes") if isinstance(item, dict) else None
    path = item.get("path") if isinstance(item, dict) else None
    if not data and not path:
        return "no image bytes and no path"
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data) if data else path) as im:
                im.load()
    except Exception as err:  # any decoder failure is a finding, reported per doc
        return f"{type(err).__name__}: {err}"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    return None


def _image_columns(features) -> List[Tuple[str, bool]]:
    """(column, is_list) for columns holding images (``Image`` or a list/sequence of ``Image``)."""
    from datasets import Image

    out = []
    for name, feat in features.items():
        if isinstance(feat, Image):
            out.append((name, False))
        elif isinstance(getattr(feat, "feature", None), Image) or (
            isinstance(feat, list) and feat and isinstance(feat[0], Image)
        ):
            out.append((name, True))
    return out


def verify_dataset(ds, task: str = "", split: str = "") -> TaskImages:
    """Strictly decode every image of a ``datasets.Dataset`` (in its row order = lmms-eval doc ids)."""
    report = TaskImages(task, split)
    cols = _image_columns(ds.features)
    report.columns = [c for c, _ in cols]
    ids = [f for f in ID_FIELDS if f in ds.features]
    raw = ds.select_columns([c for c, _ in cols] + ids[:1]).with_format("arrow")
    doc_id = 0
    for batch in raw.iter(batch_size=64):
        cells = {c: batch.column(c).to_pylist() for c, _ in cols}
        idents = batch.column(ids[0]).to_pylist() if ids else [None] * batch.num_rows
        for row in range(batch.num_rows):
            for col, is_list in cols:
                items = cells[col][row]
                for pos, item in enumerate(items or []) if is_list else [(None, items)]:
                    if item is None:
                        continue
                    report.images += 1
                    reason = decode_error(item)
                    if reason:
                        ident = f"{ids[0]}={idents[row]}" if ids else ""
                        report.bad.append(BadImage(doc_id, col, pos, ident, reason))
            doc_id += 1
    report.docs = doc_id
    return report


def _tasks(task_dict: Dict) -> Iterator[Tuple[str, Any]]:
    for name, obj in task_dict.items():
        if isinstance(obj, dict):
            yield from _tasks(obj)
        elif obj is not None and hasattr(obj, "dataset"):
            yield str(getattr(getattr(obj, "config", None), "task", None) or name), obj


@contextlib.contextmanager
def placeholder_for_undecodable() -> Iterator[None]:
    """While active, a ``datasets`` image cell Pillow cannot decode reads as a 1x1 grey image instead of
    raising (only while the tasks are built: lmms-eval decodes doc 0 there)."""
    import datasets
    from PIL import Image

    original = datasets.Image.decode_example

    def decode_example(self, value, *args, **kwargs):
        try:
            return original(self, value, *args, **kwargs)
        except decode_errors():
            return Image.new("RGB", (1, 1), (128, 128, 128))

    datasets.Image.decode_example = decode_example
    try:
        yield
    finally:
        datasets.Image.decode_example = original


def verify_tasks(task_names: List[str], include_path: Optional[List[str]] = None) -> List[TaskImages]:
    """Build the tasks as lmms-eval does (local copies included) and verify each one's eval split."""
    from lmms_ac.plugin import load_tasks, task_dataset_configs, task_manager

    task_dataset_configs(task_names, include_path)  # unknown names fail here, with did-you-mean
    manager = task_manager(include_path)
    with placeholder_for_undecodable():  # a bad image at doc 0 is a finding, not a crash
        tasks = load_tasks(task_names, manager)
    reports = []
    for name, task in sorted(_tasks(tasks), key=lambda t: t[0]):
        split = task.config.test_split or task.config.validation_split
        if split is not None:
            reports.append(verify_dataset(task.dataset[split], name, split))
    return reports
