"""The request scheduler and the bounded caches of shared-prefix inference (pure Python, no model)."""

from __future__ import annotations

import pytest

from lmms_ac.vlm.prefix_cache import BoundedCache, image_key, kv_bytes
from lmms_ac.vlm.scheduler import Request, common_prefix_length, plan, restore_order

IMG = 99


def req(i, group, ids, limit=None, order=None):
    ids = tuple(ids)
    return Request(
        i,
        group,
        ids,
        len(ids) - 1 if limit is None else limit,
        (group,) if group else (),
        order=(i,) if order is None else order,
    )


def test_questions_about_one_image_share_a_batch_and_their_common_prefix():
    a1, b1, a2, b2 = [1, 5, IMG, 7, 8, 9], [1, 5, IMG, 7, 3], [1, 5, IMG, 7, 8, 4, 4], [1, 5, IMG, 6]
    batches = plan([req(0, "A", a1), req(1, "B", b1), req(2, "A", a2), req(3, "B", b2)], batch_size=2)
    assert [[p.index for p in b.rows] for b in batches] == [[0, 2], [3, 1]]  # shortest first within a group
    prefix = {p.index: p.prefix_ids for b in batches for p in b.rows}
    assert prefix == {0: 5, 2: 5, 1: 3, 3: 3}  # A shares [1 5 IMG 7 8], B [1 5 IMG]
    assert batches[0].rows[0].prefix_key == batches[0].rows[1].prefix_key != batches[1].rows[0].prefix_key


def test_prefix_leaves_each_request_the_tokens_it_needs_and_singletons_share_nothing():
    same = [1, 2, 3, 4, 5]
    batches = plan([req(0, "A", same, limit=3), req(1, "A", same), req(2, "C", same)], batch_size=8)
    prefix = {p.index: p.prefix_ids for p in batches[0].rows}
    assert prefix == {0: 3, 1: 3, 2: 0}
    assert plan([req(0, None, same), req(1, None, same)], 8)[0].rows[0].prefix_ids == 0


def test_resources_are_released_after_their_last_batch():
    reqs = [req(i, "A" if i < 3 else "B", [1, 2, 3, i]) for i in range(5)]
    batches = plan(reqs, batch_size=2)  # A A | A B | B
    released = [set(map(str, b.release)) for b in batches]
    assert not any("A" == r for r in released[0])
    assert "A" in released[1] and "B" in released[2]


def test_restore_order_and_bad_batch_size():
    assert restore_order({1: "b", 0: "a"}, 2) == ["a", "b"]
    with pytest.raises(RuntimeError, match="no result"):
        restore_order({0: "a"}, 2)
    with pytest.raises(ValueError, match="batch_size"):
        plan([], 0)
    assert common_prefix_length([[1, 2, 3], [1, 2], [1, 2, 4]]) == 2


def test_bounded_cache_and_image_keys():
    cache = BoundedCache(2)
    for k in "abc":
        cache.put(k, k)
    assert len(cache) == 2 and "a" not in cache and cache.get("c") == "c"
    with pytest.raises(ValueError, match="at least 1"):
        BoundedCache(0)
    from PIL import Image

    red, red2, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    assert image_key(red, "s") == image_key(red2, "s") != image_key(blue, "s")
    assert image_key(red, "s") != image_key(red, "other preprocessing")
    assert image_key(red, "s") != image_key(red.convert("RGBA"), "s")


def test_llava_7b_prefix_memory():
    # 32 layers, 32 KV heads of 128, float16; 576 image tokens + 40 text tokens
    assert kv_bytes(32, 32, 128, 616, 2) == 32 * 2 * 32 * 128 * 616 * 2 == 322_961_408


def test_whole_groups_per_batch_bounded_by_rows_and_groups():
    a = [req(i, "A", [1, 2, 3, 4, 10 + i]) for i in range(5)]
    b = [req(5 + i, "B", [1, 2, 3, 5, 20 + i]) for i in range(3)]
    c = [req(8 + i, "C", [1, 2, 3, 6, 30 + i]) for i in range(2)]
    batches = plan(a + b + c, batch_size=2, max_rows=64)  # at most 2 groups per batch, whole groups
    assert [sorted(p.index for p in bt.rows) for bt in batches] == [list(range(8)), [8, 9]]
    batches = plan(a + b + c, batch_size=8, max_rows=4)  # a group larger than max_rows is cut
    assert [len(bt.rows) for bt in batches] == [4, 4, 2]
    a_keys = {p.prefix_key for bt in batches for p in bt.rows if p.index < 5}
    assert len(a_keys) == 1 and None not in a_keys  # A's prefix carried over to its second batch
    with pytest.raises(ValueError, match="max_rows"):
        plan(a, 1, max_rows=0)
