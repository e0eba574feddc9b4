"""C_ocr, the score: C (``score_c``) on the generated text-image pairs of
:mod:`lmms_ac.scores.ocr_pairs`, reported with two position-only references (``baselines``):
``chance`` (the expected score of a uniformly random prediction in the target image) and
``same_position`` (predicting the same relative position as in the source); on these pairs the
second is near the first (tested), so a representation only scores above them by reading the text.
"""

from __future__ import annotations

import json
import math
import tempfile
from typing import Any, Dict, Optional, Sequence

import numpy as np
from loguru import logger
from PIL import Image

from lmms_ac.io import PathLike
from lmms_ac.scores.ocr_pairs import OcrPairsConfig, make_ocr_pairs

SCORE_NAME = "C_ocr"


def baselines(pairs: Sequence[Any], alpha: float = 0.1, samples: int = 64) -> Dict[str, float]:
    """Scores (percent, mean over pairs of per-pair PCK, like C) of two position-only predictors:

    ``chance``: a uniformly random point of the target image (exact up to a ``samples`` x
    ``samples`` grid of points); ``same_position``: the source keypoint's relative position in the
    target image. A representation that reads the text should beat both by far.
    """
    from lmms_ac.scores.correspondence import is_correct

    chance, same = [], []
    for pair in pairs:
        vis = pair.visible
        if not vis.any():
            continue
        sw, sh = (pair.extra.get("src_imsize") or [0, 0])[:2]
        tw, th = (pair.extra.get("trg_imsize") or [0, 0])[:2]
        if not (sw and sh and tw and th):
            with Image.open(pair.src_path) as a, Image.open(pair.trg_path) as b:
                (sw, sh), (tw, th) = a.size, b.size
        gt = pair.trg_kps[vis]
        pred = pair.src_kps[vis] / np.array([sw, sh]) * np.array([tw, th])
        same.append(is_correct(pred, gt, pair.trg_bbox_size, alpha).mean())
        u = (np.arange(samples) + 0.5) / samples
        grid = np.stack(np.meshgrid(u * tw, u * th, indexing="xy"), -1).reshape(-1, 2)
        chance.append(is_correct(grid[None, :, :], gt[:, None, :], pair.trg_bbox_size, alpha).mean())
    if not same:
        return {"chance": math.nan, "same_position": math.nan}
    return {"chance": 100.0 * float(np.mean(chance)), "same_position": 100.0 * float(np.mean(same))}


def baseline_summary(details: Any) -> Optional[str]:
    """ "chance X, same position Y" from a score row's details (a dict or its JSON text), or None."""
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            return None
    base = details.get("baselines") if isinstance(details, dict) else None
    if not isinstance(base, dict) or "chance" not in base:
        return None
    return f"chance {float(base['chance']):.2f}, same position {float(base['same_position']):.2f}"


def score_c_ocr(
    representation,
    n: int = 200,
    seed: int = 0,
    method: str = "argmax",
    alpha: float = 0.1,
    batch_size: int = 16,
    *,
    workdir: Optional[PathLike] = None,
    progress: bool = True,
    config: Optional[OcrPairsConfig] = None,
):
    """C_ocr: generate ``n`` pairs (seeded) in a temporary directory and score them like C; the
    result's ``baselines`` hold chance and the same-position baseline on the same pairs."""
    from lmms_ac.scores.correspondence import score_c
    from lmms_ac.scores.spair import load_pairs

    with tempfile.TemporaryDirectory(prefix="lmms_ac_ocr_", dir=workdir) as tmp:
        make_ocr_pairs(tmp, n=n, seed=seed, config=config)
        result = score_c(
            representation, tmp, "test", method=method, alpha=alpha, batch_size=batch_size, progress=progress
        )
        result.baselines = baselines(load_pairs(tmp, "test"), alpha)
    logger.info(
        f"C_ocr = {result.overall:.2f}% (chance {result.baselines['chance']:.2f}%, same position "
        f"{result.baselines['same_position']:.2f}%)"
    )
    return result
