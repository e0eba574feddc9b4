"""C score: geometry, matching rules and end-to-end scores on an SPair-layout fixture of real photos."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lmms_ac.registry import UnknownEntryError
from lmms_ac.scores.correspondence import (
    FeatureExtractor,
    Letterbox,
    PatchGrid,
    chance_level,
    is_correct,
    l2_concat,
    letterbox,
    predict_cells,
    score_c,
    score_pairs,
)
from lmms_ac.scores.spair import load_pairs, normalize_split, parse_keypoints, read_pair, write_pair

from lmms_ac.testing.spair import ConstantEncoder, PixelPatchEncoder, write_photo_fixture


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spair_photos")
    write_photo_fixture(root)
    return root


@pytest.fixture(scope="module")
def good_result(photo_root):
    return score_c(PixelPatchEncoder(), photo_root, "test", method="argmax", progress=False)


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("wh", [(256, 170), (170, 256), (300, 300), (641, 77), (30, 900)])
@pytest.mark.parametrize("size", [64, 224, 336])
def test_letterbox_points_round_trip(wh, size):
    box = Letterbox.fit(*wh, size)
    assert max(box.new_width, box.new_height) == size
    assert abs((box.new_width / box.new_height) / (wh[0] / wh[1]) - 1) < 1.0 / min(box.new_width, box.new_height)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (50, 2)) * wh
    back = box.to_original(box.to_padded(pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # corners of the image land on the corners of the pasted content, centred in the canvas
    corners = box.to_padded([(0, 0), (wh[0], wh[1])])
    np.testing.assert_allclose(
        corners, [(box.pad_x, box.pad_y), (box.pad_x + box.new_width, box.pad_y + box.new_height)]
    )
    assert (
        abs(box.pad_x - (size - box.new_width - box.pad_x)) <= 1
        and abs(box.pad_y - (size - box.new_height - box.pad_y)) <= 1
    )


def test_letterbox_pixels_follow_keypoints_and_pad_with_zeros():
    w, h, size = 200, 100, 64
    img = Image.new("RGB", (w, h), (255, 255, 255))
    px, _ = letterbox(img, size)
    box = Letterbox.fit(w, h, size)
    assert px.shape == (3, size, size) and px.dtype == torch.float32
    assert px[:, : box.pad_y].abs().max() == 0 and px[:, box.pad_y + box.new_height :].abs().max() == 0
    assert px[:, box.pad_y + 2 : box.pad_y + box.new_height - 2].min() > 0.99
    # a bright square at a known place lands where the keypoint transform says
    dark = Image.new("RGB", (w, h), (0, 0, 0))
    dark.paste((255, 255, 255), (140, 30, 150, 40))
    px, _ = letterbox(dark, size)
    ys, xs = torch.nonzero(px[0] > 0.5, as_tuple=True)
    centre = box.to_padded([(145.0, 35.0)])[0]
    assert (
        abs(xs.float().mean().item() + 0.5 - centre[0]) < 0.6 and abs(ys.float().mean().item() + 0.5 - centre[1]) < 0.6
    )


def test_patch_grid_index_and_centre():
    grid = PatchGrid(4, 8, 64)  # cells 8 wide, 16 high
    idx = grid.patch_index([(0, 0), (7.99, 15.99), (8, 16), (63.9, 63.9), (-3, 70)])
    assert idx.tolist() == [0, 0, 9, 31, 24]
    np.testing.assert_allclose(grid.centre([(0, 0), (3, 7), (1.5, 0.25)]), [(4, 8), (60, 56), (6, 32)])


# ----------------------------------------------------------------------------- matching rules
def test_threshold_is_strictly_below_alpha_bbox():
    pred = np.array([[0.0, 0.0]] * 3)
    gt = np.array([[6.0, 8.0], [6.0, 7.999], [0.0, 10.001]])  # distances 10, <10, >10
    assert is_correct(pred, gt, bbox_size=40.0, alpha=0.25).tolist() == [False, True, False]


def _solid(path: Path, size, colour=(90, 120, 150)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _pair(root, name, src_kps, trg_kps, trg_bbox, src="a.jpg", trg="b.jpg", category="thing", split="test"):
    write_pair(
        root,
        split,
        {
            "src_imname": src,
            "trg_imname": trg,
            "category": category,
            "src_kps": src_kps,
            "trg_kps": trg_kps,
            "src_bndbox": [0, 0, 10, 10],
            "trg_bndbox": trg_bbox,
        },
        name=name,
    )


def test_threshold_and_visibility_end_to_end(tmp_path):
    # constant features: argmax picks cell 0; encoder 64 px, grid 4x4, a 64x64 target is not resized,
    # so the prediction is the centre of cell 0 = (8, 8); bbox 40 and alpha 0.25 -> threshold 10 px
    _solid(tmp_path / "JPEGImages/thing/a.jpg", (64, 64))
    _solid(tmp_path / "JPEGImages/thing/b.jpg", (64, 64))
    _pair(tmp_path, "p1", [[30, 30]] * 4, [[14, 16], [14, 15.99], [8, 18.01], [8, 8]], [0, 0, 40, 30])
    # visibility: only keypoint 0 is visible in both images
    _pair(
        tmp_path,
        "p2",
        [[30, 30], None, [-1, -1], [20, 20], [5, 5]],
        [[8, 8], [8, 8], [8, 8], [-1, 3], [None, 2]],
        [0, 0, 40, 40],
    )
    # nothing visible in both: skipped, not counted as 0
    _pair(tmp_path, "p3", [[-1, -1], [3, 3]], [[8, 8], None], [0, 0, 40, 40])
    enc = ConstantEncoder(size=64, patch=16)
    res = score_c(enc, tmp_path, alpha=0.25, progress=False)
    by_name = {o.name: (o.n_correct, o.n_valid) for o in res.pairs}
    assert by_name == {"p1": (2, 4), "p2": (1, 1), "p3": (0, 0)}
    assert res.n_pairs == 2 and res.n_pairs_skipped == 1 and res.n_keypoints == 5
    assert res.overall == pytest.approx(100 * (0.5 + 1.0) / 2)
    assert res.keypoint_pck == pytest.approx(100 * 3 / 5)
    assert res.encoder_passes == 2  # a.jpg and b.jpg, whatever the number of pairs


def test_prediction_maps_back_through_padding(tmp_path):
    # a 128x64 target in a 64 px encoder: scale 0.5, pad_y 16; cell 0 centre (8, 8) -> original (16, -16)
    _solid(tmp_path / "JPEGImages/thing/a.jpg", (64, 64))
    _solid(tmp_path / "JPEGImages/thing/b.jpg", (128, 64))
    # threshold 0.1 * 200 = 20: (16, 0) is 16 px away (correct), (16, 5) 21 px (wrong); (16, -15)
    # would be 1 px away but a negative coordinate means invisible, so it does not count
    _pair(tmp_path, "p1", [[1, 1]] * 3, [[16, 0], [16, 5], [16, -15]], [0, 0, 200, 50])
    res = score_c(ConstantEncoder(size=64, patch=16), tmp_path, alpha=0.1, progress=False)
    assert (res.pairs[0].n_correct, res.pairs[0].n_valid) == (1, 2)


def test_window_softargmax_matches_published_rule():
    grid = PatchGrid(20, 20, 320)
    sims = torch.zeros(1, 400)
    sims[0, 5 * 20 + 5] = 1.0
    sims[0, 5 * 20 + 6] = 1.0
    sims[0, 15 * 20 + 15] = 0.999  # outside the 11x11 window: ignored
    soft = predict_cells(sims, grid, "window_softargmax")[0].tolist()
    hard = predict_cells(sims, grid, "argmax")[0].tolist()
    assert hard == [5.0, 5.0]
    assert soft == pytest.approx([5.0, 5.5], abs=1e-6)
    # zeros outside the window still enter the softmax (published code): with weak similarities the
    # expectation is pulled toward the map's centre
    weak = torch.zeros(1, 400)
    weak[0, 0] = 0.01
    soft_weak = predict_cells(weak, grid, "window_softargmax")[0]
    assert 0.5 < soft_weak[0].item() < 9.5
    with pytest.raises(UnknownEntryError, match="did you mean 'argmax'"):
        predict_cells(sims, grid, "argmx")


# ----------------------------------------------------------------------------- reader
def test_reader_handles_real_fields_and_invisible_points(tmp_path):
    record = {
        "pair_id": 7,
        "src_imname": "2008_000001.jpg",
        "trg_imname": "2008_000002.jpg",
        "src_imsize": [500, 333, 3],
        "trg_imsize": [500, 375, 3],
        "src_bndbox": [1, 2, 300, 200],
        "trg_bndbox": [10, 20, 110, 70],
        "category": "aeroplane",
        "kps_ids": ["0", "3", "9"],
        "src_kps": [[1, 2], [3, 4], [5, 6]],
        "trg_kps": [[7, 8], [-1, -1], None],
        "mirror": 0,
        "viewpoint_variation": 1,
    }
    path = write_pair(tmp_path, "test", record)
    assert path.name == "000007-2008_000001-2008_000002:aeroplane.json"
    pair = read_pair(path, tmp_path / "JPEGImages")
    assert pair.visible.tolist() == [True, False, False]
    assert pair.trg_bbox_size == 100.0
    assert pair.src_path == tmp_path / "JPEGImages/aeroplane/2008_000001.jpg"
    assert pair.extra["kps_ids"] == ["0", "3", "9"] and pair.extra["src_imsize"] == [500, 333, 3]
    assert np.isnan(parse_keypoints([[float("nan"), 3]])).all()
    assert parse_keypoints({"1": [1, 2], "0": None}).shape == (2, 2)
    assert normalize_split("train") == "trn"
    with pytest.raises(ValueError, match="did you mean 'test'"):
        normalize_split("tset")
    with pytest.raises(FileNotFoundError):
        load_pairs(tmp_path, "val")
    bad = tmp_path / "PairAnnotation/test/bad.json"
    bad.write_text(json.dumps({"src_imname": "x"}))
    with pytest.raises(ValueError, match="missing"):
        read_pair(bad, tmp_path)


# ----------------------------------------------------------------------------- end to end
def test_pixel_encoder_scores_near_100(good_result, photo_root):
    assert good_result.n_pairs == 20 and good_result.n_keypoints > 150
    assert good_result.overall >= 95.0, good_result.per_category
    assert set(good_result.per_category) == {"person", "cat", "cup", "rocket"}
    assert min(good_result.per_category.values()) >= 85.0
    # a pure resize is undone by the letterbox: every keypoint must be exact there
    resized = [o for o in good_result.pairs if o.name.endswith("_resize:" + o.category)]
    assert len(resized) == 4 and all(o.n_correct == o.n_valid for o in resized)


def test_constant_encoder_is_at_chance(good_result, photo_root):
    pairs = load_pairs(photo_root)
    enc = ConstantEncoder()
    res = score_c(enc, photo_root, progress=False)
    # all similarities tie -> argmax = cell 0 -> its centre mapped back to each target image
    grid = PatchGrid(*enc.grid, enc.image_size)
    expected = []
    for pair in pairs:
        with Image.open(pair.trg_path) as im:
            box = Letterbox.fit(*im.size, enc.image_size)
        pred = box.to_original(grid.centre([(0, 0)]))
        vis = pair.visible
        expected.append(is_correct(np.repeat(pred, vis.sum(), 0), pair.trg_kps[vis], pair.trg_bbox_size, 0.1).mean())
    assert res.overall == pytest.approx(100 * np.mean(expected))
    uniform = chance_level(pairs, grid)
    assert 0.5 < uniform < 10  # a random cell is rarely right
    assert res.overall <= uniform + 5
    assert good_result.overall - res.overall > 80


def test_each_image_encoded_once(photo_root, tmp_path):
    pairs = load_pairs(photo_root)
    images = {p for pair in pairs for p in (pair.src_path, pair.trg_path)}
    enc = PixelPatchEncoder()
    one = score_pairs(enc, pairs, batch_size=5, progress=False)
    assert one.encoder_passes == len(images) == enc.images_seen
    # doubling the pairs (reversed directions, duplicates) over the same images: no more passes
    doubled = list(pairs) + [
        type(p)(p.name + "_rev", p.category, p.trg_path, p.src_path, p.trg_kps, p.src_kps, p.trg_bbox, p.src_bbox)
        for p in pairs
    ]
    enc2 = PixelPatchEncoder()
    two = score_pairs(enc2, doubled + list(pairs), batch_size=5, progress=False)
    assert two.encoder_passes == one.encoder_passes == enc2.images_seen
    assert two.n_pairs == 3 * one.n_pairs
    # batching: ceil(images per category / batch) calls, one per batch
    per_cat = {}
    for p in images:
        per_cat[p.parent.name] = per_cat.get(p.parent.name, 0) + 1
    assert enc2.calls == two.encoder_calls == sum(math.ceil(n / 5) for n in per_cat.values())


def test_methods_both_run_and_limit(photo_root, good_result):
    soft = score_c(PixelPatchEncoder(), photo_root, method="window_softargmax", progress=False)
    assert soft.method == "window_softargmax" and soft.overall >= 85.0
    assert soft.n_keypoints == good_result.n_keypoints
    limited = score_c(PixelPatchEncoder(), photo_root, limit=3, progress=False)
    assert limited.n_pairs == 3
    with pytest.raises(UnknownEntryError):
        score_c(PixelPatchEncoder(), photo_root, method="softargmax", progress=False)


def test_feature_combination(photo_root, good_result):
    a, b = torch.randn(2, 5, 7), torch.randn(2, 5, 3) * 100
    c = l2_concat([a, b])
    assert torch.allclose(c.norm(dim=-1), torch.ones(2, 5))
    # each part weighs the same whatever its scale
    assert torch.allclose(c[..., :7].norm(dim=-1), c[..., 7:].norm(dim=-1))
    # a representation combined with itself scores exactly like itself; passes count images once
    enc1, enc2 = PixelPatchEncoder(), PixelPatchEncoder()
    both = score_c([enc1, enc2], photo_root, progress=False)
    assert both.overall == pytest.approx(good_result.overall)
    assert enc1.images_seen == enc2.images_seen == both.encoder_passes
    with pytest.raises(ValueError, match="same token grid|share one token grid"):
        FeatureExtractor([PixelPatchEncoder(patch=8), PixelPatchEncoder(patch=16)])


def test_imsize_mismatch_is_reported(tmp_path):
    from loguru import logger

    _solid(tmp_path / "JPEGImages/thing/a.jpg", (64, 64))
    _solid(tmp_path / "JPEGImages/thing/b.jpg", (64, 48))
    write_pair(
        tmp_path,
        "test",
        {
            "src_imname": "a.jpg",
            "trg_imname": "b.jpg",
            "category": "thing",
            "src_kps": [[3, 3]],
            "trg_kps": [[5, 5]],
            "src_bndbox": [0, 0, 9, 9],
            "trg_bndbox": [0, 0, 9, 9],
            "src_imsize": [64, 64, 3],
            "trg_imsize": [128, 96, 3],
        },
    )
    messages = []
    sink = logger.add(messages.append, level="WARNING")
    try:
        score_c(ConstantEncoder(size=64, patch=16), tmp_path, progress=False)
    finally:
        logger.remove(sink)
    assert any("differ in size" in m and "b.jpg" in m for m in messages)


# ----------------------------------------------------------------------------- a patch size that does not divide
def test_grid_covers_what_a_patch_convolution_sees(tmp_path):
    """SigLIP-so400m at 384 px has 27 x 14 = 378 px under its tokens; the conv drops the rest. Cells are patch-wide
    and points in the dropped border fall in the last row/column (a 384/27 px cell would be off by up to a cell)."""
    from lmms_ac.testing.towers import make_siglip_tower
    from lmms_ac.vision import load_representation

    tower = load_representation(f"siglip:{make_siglip_tower(str(tmp_path / 'siglip'), image_size=36, patch_size=8)}")
    assert tower.grid == (4, 4) and tower.covered_size == 32
    grid = FeatureExtractor(tower).grid
    assert grid.size == 36 and grid.cell == (8.0, 8.0)  # letterbox canvas 36 px, cells 8 px
    assert grid.patch_index([(23.5, 0), (24.5, 0), (35, 35)]).tolist() == [2, 3, 15]
    np.testing.assert_allclose(grid.centre([(3, 3)]), [(28.0, 28.0)])
    # a representation that does not declare a patch convolution keeps cells spanning the whole input
    plain = PixelPatchEncoder(size=36, patch=8)
    assert plain.covered_size == 36 and FeatureExtractor(plain).grid.cell == (9.0, 9.0)
