"""Images of a benchmark's own data, for the per-benchmark A_embed (``A_embed_<benchmark>``).

The published A_embed was computed per benchmark on 100 images of that benchmark. Here the images
come through the lmms-eval task itself: its evaluation split (test, else validation), the docs in
a seeded order, each doc's visuals from the task's own ``doc_to_visual`` (so a task that crops,
picks or composes images gives what the model sees in evaluation); the first image of each doc is
used and docs without an image (text-only or video) are skipped until ``n`` images are found. The
dataset loads however lmms-eval loads it, which includes a local copy under ``$LMMS_AC_DATASETS``
(``lmms-ac mirror``) on an offline machine. A tag (``seed_image``) resolves to its one task.
"""

from __future__ import annotations

import random
from typing import Any, Iterable, List, Optional, Sequence

from PIL import Image


def _first_image(visuals: Any) -> Optional[Image.Image]:
    items: Iterable[Any] = visuals if isinstance(visuals, (list, tuple)) else [visuals]
    for v in items:
        if isinstance(v, Image.Image):
            return v
        if isinstance(v, dict) and isinstance(v.get("bytes"), (bytes, bytearray)):  # datasets Image column, undecoded
            import io

            return Image.open(io.BytesIO(v["bytes"]))
    return None


def images_from_task(task: Any, n: int = 100, seed: int = 0) -> List[Image.Image]:
    """``n`` images of an lmms-eval task object (``eval_docs`` + ``doc_to_visual``), docs in seeded order.

    Raises ValueError when the task has fewer than one image; warns (returns fewer) when it has
    fewer than ``n``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    docs = task.eval_docs
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    images: List[Image.Image] = []
    for i in order:
        im = _first_image(task.doc_to_visual(docs[i]))
        if im is None:
            continue
        im.load()
        images.append(im.convert("RGB"))
        if len(images) == n:
            break
    name = getattr(task, "task_name", None) or getattr(getattr(task, "config", None), "task", "task")
    if not images:
        raise ValueError(f"{name}: no doc has an image (doc_to_visual gave none); A_embed needs an image benchmark")
    if len(images) < n:
        from loguru import logger

        logger.warning(f"{name}: only {len(images)} docs with an image; A_embed uses all of them instead of {n}")
    return images


def load_task(name: str, include_path: Optional[Sequence[str]] = None) -> Any:
    """The lmms-eval task object of ``name`` (a task, or a tag/group naming exactly one task)."""
    from lmms_ac.plugin import load_task_or_group, require_tasks, task_manager

    manager = task_manager(include_path)  # our tasks, generated robustness tasks and the $LMMS_AC_DATASETS redirect
    require_tasks(manager, [name])
    loaded = load_task_or_group([name], manager)
    tasks = list(_leaves(loaded))
    if len(tasks) != 1:
        raise ValueError(
            f"{name!r} names {len(tasks)} tasks ({', '.join(t.config.task for t in tasks[:5])}...); "
            f"choose one of them for A_embed"
        )
    return tasks[0]


def _leaves(obj: Any) -> Iterable[Any]:
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    else:
        yield obj


def benchmark_images(
    name: str, n: int = 100, seed: int = 0, include_path: Optional[Sequence[str]] = None
) -> List[Image.Image]:
    """``n`` seeded images of benchmark task ``name`` (see the module doc)."""
    return images_from_task(load_task(name, include_path), n, seed)
