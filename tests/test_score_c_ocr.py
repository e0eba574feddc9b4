"""C_ocr: the seeded text-image pair generator and its score."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lmms_ac.scores.correspondence import PatchGrid, chance_level, score_c
from lmms_ac.scores.ocr_pairs import KINDS, OcrPairsConfig, apply_affine, make_ocr_pairs, score_c_ocr
from lmms_ac.scores.spair import load_pairs

from lmms_ac.testing.spair import ConstantEncoder, PixelPatchEncoder


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "ocr_pairs.json"}


@pytest.fixture(scope="module")
def ocr_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ocr")
    make_ocr_pairs(root, n=32, seed=0)
    return root


def test_generator_is_deterministic_and_prefix_stable(tmp_path, ocr_root):
    make_ocr_pairs(tmp_path / "again", n=32, seed=0)
    assert _digest(tmp_path / "again") == _digest(ocr_root)
    make_ocr_pairs(tmp_path / "small", n=8, seed=0)
    small, full = _digest(tmp_path / "small"), _digest(ocr_root)
    assert small and all(full[k] == v for k, v in small.items())
    make_ocr_pairs(tmp_path / "other", n=8, seed=1)
    assert set(_digest(tmp_path / "other").values()).isdisjoint(small.values())
    meta = json.loads((ocr_root / "ocr_pairs.json").read_text())
    assert meta["pairs"] == 32 and meta["config"]["seed"] == 0 and meta["provenance"]["config_hash"]


def test_pairs_are_consistent(ocr_root):
    pairs = load_pairs(ocr_root)
    assert len(pairs) == 32 and {p.category for p in pairs} == set(KINDS)
    for pair in pairs:
        assert pair.visible.all() and len(pair.src_kps) >= 4
        matrix = np.vstack([np.array(pair.extra["transform"]), [0, 0, 1]])
        np.testing.assert_allclose(apply_affine(matrix, pair.src_kps), pair.trg_kps, atol=0.02)
        w, h = pair.extra["trg_imsize"][:2]
        with Image.open(pair.trg_path) as im:
            assert im.size == (w, h)
        assert ((pair.trg_kps >= 0) & (pair.trg_kps < (w, h))).all()
        x1, y1, x2, y2 = pair.trg_bbox
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and pair.trg_bbox_size > 50
        assert len(pair.extra["kps_text"]) == len(pair.src_kps)
    # sources are shared by two targets each: images are reused across pairs
    assert len({p.src_path for p in pairs}) == 16


def test_identity_warp_is_solved_exactly(tmp_path):
    cfg = OcrPairsConfig(n=8, seed=0, max_rotation_deg=0.0, scale_range=(1.0, 1.0), max_shift=0.0)
    make_ocr_pairs(tmp_path, config=cfg)
    assert score_c(PixelPatchEncoder(), tmp_path, progress=False).overall == 100.0


def test_pixel_encoder_far_above_constant_and_chance(ocr_root):
    good = score_c(PixelPatchEncoder(), ocr_root, progress=False)
    const = score_c(ConstantEncoder(), ocr_root, progress=False)
    chance = chance_level(load_pairs(ocr_root), PatchGrid(16, 16, 128))
    # text under sub-cell shifts, rotation and scale is hard for raw pixel patches (the point of
    # C_ocr), yet they stay well above chance; a mild warp is solved almost always
    assert chance < 5 and const.overall < 5
    assert good.overall > 5 * chance and good.overall > const.overall + 15


def test_mild_warp_scores_high(tmp_path):
    cfg = OcrPairsConfig(n=16, seed=0, max_rotation_deg=1.0, scale_range=(0.98, 1.02), max_shift=0.0)
    make_ocr_pairs(tmp_path, config=cfg)
    assert score_c(PixelPatchEncoder(), tmp_path, progress=False).overall >= 90.0


def test_score_c_ocr_cleans_up(tmp_path):
    res = score_c_ocr(PixelPatchEncoder(), n=8, seed=0, workdir=tmp_path, progress=False)
    assert res.n_pairs == 8 and 0 <= res.overall <= 100
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileExistsError):
        make_ocr_pairs(tmp_path / "x", n=2)
        make_ocr_pairs(tmp_path / "x", n=2)
