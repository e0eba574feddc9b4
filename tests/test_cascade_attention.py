"""Cascade attention equals plain attention over ``[prefix | suffix]``: broadcast and stacked prefix
blocks, rows out of order, rows without a prefix, grouped-query heads, padded queries (float32)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lmms_ac.vlm import cascade
from lmms_ac.vlm.cascade import CascadeContext, Packing, build_blocks, cascade_attention


def _entry(P, Hkv, d, layers=1):
    kv = [(torch.randn(Hkv, P, d), torch.randn(Hkv, P, d)) for _ in range(layers)]
    return SimpleNamespace(kv=kv, length=P)


def _reference(q, prefix_kv, k, v, mask, scaling):
    """Per row: softmax over its prefix keys (all visible) and its masked suffix keys."""
    B, Hq, T, d = q.shape
    rep = Hq // k.shape[1]
    out = torch.zeros(B, T, Hq, d)
    for b in range(B):
        pk, pv = prefix_kv[b] if prefix_kv[b] is not None else (k.new_zeros(k.shape[1], 0, d),) * 2
        keys = torch.cat([pk, k[b]], dim=1).repeat_interleave(rep, 0)
        vals = torch.cat([pv, v[b]], dim=1).repeat_interleave(rep, 0)
        visible = torch.cat([torch.ones(T, pk.shape[1], dtype=torch.bool), mask[b, 0]], dim=1)
        s = (q[b] @ keys.transpose(-1, -2)) * scaling
        s = s.masked_fill(~visible, float("-inf"))
        p = torch.softmax(s, -1).nan_to_num(0.0)
        out[b] = (p @ vals).transpose(0, 1)
    return out


@pytest.fixture(params=["fused", "matmul"])
def prefix_kernel(request, monkeypatch):
    """Both ways of the prefix part: torch's fused CPU kernel (taken on CPU) and the matmul path (other devices)."""
    if request.param == "matmul":
        monkeypatch.setattr(cascade, "fused_cpu_attention", lambda q, k, v: None)
    else:
        q, k = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 5, 4)
        assert cascade.fused_cpu_attention(q, k, k) is not None, "this torch has no fused CPU attention kernel"
    return request.param


def test_fused_kernel_returns_the_log_sum_exp():
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 11, 8), torch.randn(2, 3, 11, 8)
    out, lse = cascade.fused_cpu_attention(q, k, v)
    scores = q @ k.transpose(-1, -2)  # queries arrive pre-scaled: no further scaling
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, torch.softmax(scores, -1) @ v, rtol=1e-5, atol=1e-5)


def test_cascade_matches_attention_over_prefix_and_suffix(prefix_kernel):
    torch.manual_seed(0)
    Hq, Hkv, d, T, S = 4, 2, 8, 3, 5
    shared, other = _entry(7, Hkv, d), _entry(7, Hkv, d)
    solo1, solo2 = _entry(4, Hkv, d), _entry(4, Hkv, d)
    # rows: shared group out of order (0, 3, 5), two single-row groups stacked (1, 4), a 2-row group (2, 6), none (7)
    entries = [shared, solo1, other, shared, solo2, shared, other, None, None]
    B = len(entries)
    q, k, v = torch.randn(B, Hq, T, d), torch.randn(B, Hkv, S, d), torch.randn(B, Hkv, S, d)
    q[8], k[8] = 50.0, -1.0  # no prefix, every suffix score about -120: the empty prefix must not win the max
    valid = torch.rand(B, S) > 0.3
    valid[:, -1] = True
    valid[7] = False  # a row with neither prefix nor visible suffix: zeros, never NaN
    causal = torch.arange(S)[None, :] <= torch.arange(S - T, S)[:, None]
    mask = valid[:, None, None, :] & causal[None, None]
    ctx = CascadeContext(B, build_blocks(entries, torch.device("cpu")), mask)
    assert sorted((blk.groups, blk.per_group) for blk in ctx.blocks) == [(1, 2), (1, 3), (2, 1)]
    module = SimpleNamespace(layer_idx=0)
    out, _ = cascade_attention(module, q, k, v, None, scaling=0.3, lmms_ac_prefix=ctx)
    expected = _reference(q, [e.kv[0] if e is not None else None for e in entries], k, v, mask, 0.3)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_one_group_in_order_is_a_view_of_the_prefix():
    e = _entry(6, 2, 4)
    (block,) = build_blocks([e, e, e], torch.device("cpu"))
    assert block.in_order and block.kv[0][0].data_ptr() == e.kv[0][0].data_ptr()  # no copy per question


def test_half_precision_stays_close(prefix_kernel):
    torch.manual_seed(1)
    Hq, Hkv, d, T, S = 4, 4, 8, 2, 3
    e = _entry(9, Hkv, d)
    entries = [e, e, None]
    q, k, v = torch.randn(3, Hq, T, d), torch.randn(3, Hkv, S, d), 100 * torch.randn(3, Hkv, S, d)
    mask = torch.ones(3, 1, T, S, dtype=torch.bool)
    ctx = CascadeContext(3, build_blocks(entries, torch.device("cpu")), mask)
    module = SimpleNamespace(layer_idx=0)
    half = SimpleNamespace(kv=[(t.bfloat16(), u.bfloat16()) for t, u in e.kv], length=9)
    ctx_half = CascadeContext(3, build_blocks([half, half, None], torch.device("cpu")), mask)
    full, _ = cascade_attention(module, q, k, v, None, scaling=0.3, lmms_ac_prefix=ctx)
    low, _ = cascade_attention(
        module, q.bfloat16(), k.bfloat16(), v.bfloat16(), None, scaling=0.3, lmms_ac_prefix=ctx_half
    )
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), full, rtol=0.05, atol=2.0)


def test_packing_layout():
    left = Packing.of([2, 3, 1], 3, "left", torch.device("cpu"))
    assert left.rows.tolist() == [0, 0, 1, 1, 1, 2] and left.cols.tolist() == [1, 2, 0, 1, 2, 2]
    assert left.last.tolist() == [1, 4, 5]
    right = Packing.of([2, 3, 1], 3, "right", torch.device("cpu"))
    assert right.cols.tolist() == [0, 1, 0, 1, 2, 0] and right.last.tolist() == [1, 4, 5]
    padded = left.unpack(torch.arange(6.0)[:, None], 3)
    assert padded[..., 0].tolist() == [[0, 0, 1], [2, 3, 4], [0, 0, 5]]


def test_packed_queries_equal_padded_ones(prefix_kernel):
    """A packed forward's queries ``[1, Hq, N, d]`` attend exactly as the same queries laid out padded."""
    torch.manual_seed(1)
    Hq, Hkv, d, S = 4, 2, 8, 5
    shared, other = _entry(7, Hkv, d), _entry(3, Hkv, d)
    entries = [shared, other, shared, None]
    lengths = [5, 2, 4, 3]
    B = len(entries)
    packing = Packing.of(lengths, S, "left", torch.device("cpu"))
    k, v = torch.randn(B, Hkv, S, d), torch.randn(B, Hkv, S, d)
    valid = torch.zeros(B, S, dtype=torch.bool)
    valid[packing.rows, packing.cols] = True
    causal = torch.arange(S)[None, :] <= torch.arange(S)[:, None]
    mask = valid[:, None, None, :] & causal[None, None]
    q_packed = torch.randn(1, Hq, sum(lengths), d)
    q_padded = packing.unpack(q_packed[0].transpose(0, 1), B).transpose(1, 2)  # [B, Hq, S, d]
    module = SimpleNamespace(layer_idx=0)
    blocks = build_blocks(entries, torch.device("cpu"))
    padded, _ = cascade_attention(
        module, q_padded, k, v, None, scaling=0.4, lmms_ac_prefix=CascadeContext(B, blocks, mask)
    )
    ctx = CascadeContext(B, blocks, mask, packing)
    packed, _ = cascade_attention(module, q_packed, k, v, None, scaling=0.4, lmms_ac_prefix=ctx)
    assert packed.shape == (1, sum(lengths), Hq, d)
    torch.testing.assert_close(packed[0], padded[packing.rows, packing.cols], rtol=0, atol=0)
    expected = _reference(q_padded, [e.kv[0] if e is not None else None for e in entries], k, v, mask, 0.4)
    torch.testing.assert_close(packed[0], expected[packing.rows, packing.cols], rtol=1e-5, atol=1e-5)
