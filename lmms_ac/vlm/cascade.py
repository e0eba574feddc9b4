"""Cascade attention: the suffixes and decoding steps of many questions attend to their shared
prefix's keys/values once per group (a broadcast view, never a per-question copy) and to their own
suffix keys/values, the two parts merged by log-sum-exp - the same softmax over ``[prefix | suffix]``.

It runs inside transformers' attention modules: ``cascade_attention`` is registered in
``AttentionInterface`` under ``NAME``, ``use_cascade`` switches an LLM's attention to it for a block
of code, and the prefixes travel to it through the forward's keyword arguments (``KWARG``: a
``CascadeContext``). The KV cache then holds the suffix positions only.

Shapes: queries ``[B, Hq, T, d]``, suffix keys/values ``[B, Hkv, S, d]`` (``Hq = rep * Hkv``), a prefix
block's keys/values ``[G, Hkv, P, d]`` for ``G`` groups of ``n`` rows each (rows group-major).

Packed suffixes: the suffix prefill may run as one sequence of all rows' real tokens (``[1, N]``, no
padding), so the LLM's projections and MLPs never see a pad position. ``Packing`` says where each
token sits in the padded ``[B, T]`` layout; the suffix cache scatters keys/values into that layout
and ``cascade_attention`` lays the queries out padded for the attention only, then packs the output.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch

NAME = "lmms_ac_cascade"
KWARG = "lmms_ac_prefix"


@dataclass
class PrefixBlock:
    """``groups`` prefixes of equal length, each shared by ``per_group`` rows (``rows``, group-major)."""

    rows: torch.Tensor  # [groups * per_group] batch rows
    groups: int
    per_group: int
    kv: List[Tuple[torch.Tensor, torch.Tensor]]  # per layer [groups, Hkv, P, d]
    in_order: bool = False  # rows are exactly 0..B-1 in order


@dataclass
class Packing:
    """Where each of ``N`` packed tokens (rows one after the other) sits in the padded ``[B, width]``
    layout: token ``i`` is row ``rows[i]``, column ``cols[i]``; ``last[b]`` is row ``b``'s last token."""

    rows: torch.Tensor  # [N]
    cols: torch.Tensor  # [N]
    width: int
    last: torch.Tensor  # [B] packed index of each row's last token

    @classmethod
    def of(cls, lengths: Sequence[int], width: int, side: str, device: torch.device) -> "Packing":
        """Rows of ``lengths`` tokens (each >= 1), left- or right-aligned (``side``) in ``width`` columns."""
        rows, cols, starts, at = [], [], [], 0
        for b, n in enumerate(lengths):
            first = width - n if side == "left" else 0
            rows += [b] * n
            cols += range(first, first + n)
            starts.append(at)
            at += n
        last = [s + n - 1 for s, n in zip(starts, lengths)]
        as_tensor = functools.partial(torch.tensor, dtype=torch.long, device=device)
        return cls(as_tensor(rows), as_tensor(cols), int(width), as_tensor(last))

    def unpack(self, packed: torch.Tensor, batch: int) -> torch.Tensor:
        """``[N, *rest]`` -> ``[batch, width, *rest]``, zeros at the pad positions."""
        out = packed.new_zeros((batch, self.width, *packed.shape[1:]))
        out[self.rows, self.cols] = packed
        return out


@dataclass
class CascadeContext:
    """What one forward's attention needs beyond the suffix cache."""

    batch: int
    blocks: List[PrefixBlock]
    mask: Optional[torch.Tensor] = None  # [B, 1, T, S] bool: which suffix keys each query sees
    packing: Optional[Packing] = None  # set for a packed forward (queries ``[1, Hq, N, d]``)


def build_blocks(entries: Sequence[Optional[Any]], device: torch.device) -> List[PrefixBlock]:
    """Blocks from each row's ``PrefixEntry`` (None: no prefix): rows with the same entry form a group,
    groups with the same (rows, prefix length) are stacked into one block (one copy per group)."""
    groups: dict = {}
    for b, e in enumerate(entries):
        if e is not None:
            groups.setdefault(id(e), (e, []))[1].append(b)
    buckets: dict = {}
    for e, rows in groups.values():
        buckets.setdefault((len(rows), e.length), []).append((e, rows))
    blocks = []
    for (n, _), members in buckets.items():
        rows = torch.tensor([b for _, rs in members for b in rs], device=device)
        if len(members) == 1:  # the common case: a view of the cached prefix, no copy
            kv = [(k[None], v[None]) for k, v in members[0][0].kv]
        else:
            kv = [
                (torch.stack([e.kv[i][0] for e, _ in members]), torch.stack([e.kv[i][1] for e, _ in members]))
                for i in range(len(members[0][0].kv))
            ]
        in_order = len(rows) == len(entries) and bool(torch.equal(rows, torch.arange(len(entries), device=device)))
        blocks.append(PrefixBlock(rows, len(members), n, kv, in_order))
    return blocks


def _softmax_parts(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """In place: ``scores`` -> ``exp(scores - max)``; returns (those, max, sum) over the last dim. A row
    with no visible key (all ``-inf``) gets max 0 and sum 0."""
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    e = scores.sub_(m).exp_()
    return e, m[..., 0], e.sum(dim=-1)


def _weighted_values(e: torch.Tensor, total: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``e @ v`` (unnormalised, float32). In half precision the weights are normalised before the
    product and the sum multiplied back after, so the half-precision matmul cannot overflow."""
    if v.dtype == torch.float32:
        return torch.matmul(e, v)
    normalised = e.div_(total.clamp_min(torch.finfo(torch.float32).tiny)[..., None]).to(v.dtype)
    return torch.matmul(normalised, v).float() * total[..., None]


def fused_cpu_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """(softmax-normalised output, log-sum-exp of the scores) of unmasked attention of pre-scaled ``q`` over
    ``k``/``v`` (``[..., L, d]``, ``[..., P, d]``) from torch's fused CPU kernel, the one
    ``scaled_dot_product_attention`` runs on CPU; None where it does not apply (another device, a torch
    without it). The merge with the suffix part needs the log-sum-exp, which the public
    ``scaled_dot_product_attention`` does not return."""
    kernel = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if kernel is None or q.device.type != "cpu" or q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return None
    try:
        out, lse = kernel(q, k, v, 0.0, False, scale=1.0)
    except (RuntimeError, TypeError):  # an unsupported shape or dtype on this build
        return None
    return out.float(), lse.float()


def _prefix_part(query: torch.Tensor, block: PrefixBlock, layer: int):
    """Unnormalised output, max and sum of each query's softmax over its prefix (queries pre-scaled); from the
    fused CPU kernel the output comes normalised, with the log-sum-exp as max and a sum of 1."""
    k, v = block.kv[layer]
    G, Hkv, _, d = k.shape
    _, Hq, T, _ = query.shape
    n, rep = block.per_group, Hq // Hkv
    q = query if block.in_order else query.index_select(0, block.rows)
    # every query of a group (its rows x the heads sharing one KV head x positions) against one prefix
    q = q.reshape(G, n, Hkv, rep, T, d).permute(0, 2, 1, 3, 4, 5).reshape(G, Hkv, n * rep * T, d)
    fused = fused_cpu_attention(q, k, v)
    if fused is not None:
        out, m = fused
        total = torch.ones_like(m)
    else:
        e, m, total = _softmax_parts(torch.matmul(q, k.transpose(-1, -2)).float())
        out = _weighted_values(e, total, v)
    out = out.reshape(G, Hkv, n, rep, T, d).permute(0, 2, 1, 3, 4, 5).reshape(G * n, Hq, T, d)

    def rows(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(G, Hkv, n, rep, T).permute(0, 2, 1, 3, 4).reshape(G * n, Hq, T)

    return out, rows(m), rows(total)


def _suffix_part(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor):
    B, Hq, T, d = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    rep = Hq // Hkv
    scores = torch.matmul(query.reshape(B, Hkv, rep * T, d), key.transpose(-1, -2)).float()
    scores = scores.reshape(B, Hkv, rep, T, S).masked_fill_(~mask[:, :, None], float("-inf"))
    e, m, total = _softmax_parts(scores)
    out = _weighted_values(e.reshape(B, Hkv, rep * T, S), total.reshape(B, Hkv, rep * T), value).reshape(B, Hq, T, d)
    return out, m.reshape(B, Hq, T), total.reshape(B, Hq, T)


def cascade_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    **kwargs: Any,
) -> Tuple[torch.Tensor, None]:
    """transformers' attention-function signature; the output is ``[B, T, Hq, d]`` as sdpa's (``[1, N, Hq, d]``
    for a packed forward)."""
    ctx: CascadeContext = kwargs[KWARG]
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    packing = ctx.packing
    if packing is not None:  # packed queries [1, Hq, N, d] -> padded [B, Hq, width, d] for the attention
        query = packing.unpack(query[0].transpose(0, 1), ctx.batch).transpose(1, 2)
    out = _attend(query * scaling, key, value, ctx, module.layer_idx).transpose(1, 2)  # scaled once here
    if packing is not None:  # the gather copies: no contiguous copy before it
        return out[packing.rows, packing.cols][None], None
    return out.contiguous(), None


def _attend(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, ctx: CascadeContext, layer: int
) -> torch.Tensor:
    """Softmax over ``[prefix | suffix]`` of the pre-scaled ``query`` ``[B, Hq, T, d]``; ``[B, Hq, T, d]``."""
    B, Hq, T, d = query.shape
    out2, m2, s2 = _suffix_part(query, key, value, ctx.mask)
    if len(ctx.blocks) == 1 and ctx.blocks[0].in_order:
        out1, m1, s1 = _prefix_part(query, ctx.blocks[0], layer)
    else:
        out1 = query.new_zeros((B, Hq, T, d), dtype=torch.float32)
        m1 = query.new_zeros((B, Hq, T), dtype=torch.float32)
        s1 = query.new_zeros((B, Hq, T), dtype=torch.float32)
        for block in ctx.blocks:
            o, m, total = _prefix_part(query, block, layer)
            out1.index_copy_(0, block.rows, o)
            m1.index_copy_(0, block.rows, m)
            s1.index_copy_(0, block.rows, total)
    # merge: softmax over [prefix | suffix] = (e1 @ V1 * exp(m1 - m) + e2 @ V2 * exp(m2 - m)) / (sums alike)
    m1, m2 = m1.masked_fill(s1 == 0, float("-inf")), m2.masked_fill(s2 == 0, float("-inf"))  # empty parts
    m = torch.maximum(m1, m2)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    w1, w2 = torch.exp(m1 - m), torch.exp(m2 - m)
    denom = (s1 * w1 + s2 * w2).clamp_min(torch.finfo(torch.float32).tiny)[..., None]
    out = (out1.float() * w1[..., None] + out2.float() * w2[..., None]) / denom
    return out.to(query.dtype)


def supported(llm: Any) -> bool:
    """Whether the LLM's attention goes through transformers' ``AttentionInterface``."""
    try:
        from transformers import AttentionInterface  # noqa: F401
    except ImportError:
        return False
    return bool(getattr(llm, "_supports_attention_backend", False)) and hasattr(llm, "config")


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, cascade_attention)


def attention_configs(llm: torch.nn.Module) -> List[Any]:
    """The distinct configs the LLM's modules read ``_attn_implementation`` from."""
    found = {
        id(m.config): m.config for m in llm.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")
    }
    return list(found.values())


@contextlib.contextmanager
def use_cascade(configs: Sequence[Any]) -> Iterator[None]:
    """Route the attention of every module reading these configs to ``cascade_attention`` inside the block."""
    before = [c._attn_implementation for c in configs]
    try:
        for c in configs:
            c._attn_implementation = NAME
        yield
    finally:
        for c, impl in zip(configs, before):
            c._attn_implementation = impl
