"""Cascade attention: the suffixes and decoding steps of many questions attend to their shared
prefix's keys/values once per group (a broadcast view, never a per-question copy) and to their own
suffix keys/values, the two parts merged by log-sum-exp - the same softmax over ``[prefix | suffix]``.

It runs inside transformers' attention modules: ``cascade_attention`` is registered in
``AttentionInterface`` under ``NAME``, ``use_cascade`` switches an LLM's attention to it for a block
of code, and the prefixes travel to it through the forward's keyword arguments (``KWARG``: a
``CascadeContext``). The KV cache then holds the suffix positions only.

Shapes: queries ``[B, Hq, T, d]``, suffix keys/values ``[B, Hkv, S, d]`` (``Hq = rep * Hkv``), a prefix
block's keys/values ``[G, Hkv, P, d]`` for ``G`` groups of ``n`` rows each (rows group-major).
"""

from __future__ import annotations

import contextlib
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
class CascadeContext:
    """What one forward's attention needs beyond the suffix cache."""

    batch: int
    blocks: List[PrefixBlock]
    mask: Optional[torch.Tensor] = None  # [B, 1, T, S] bool: which suffix keys each query sees


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


def _prefix_part(query: torch.Tensor, block: PrefixBlock, layer: int, scaling: float):
    k, v = block.kv[layer]
    G, Hkv, _, d = k.shape
    _, Hq, T, _ = query.shape
    n, rep = block.per_group, Hq // Hkv
    q = query if block.in_order else query.index_select(0, block.rows)
    # every query of a group (its rows x the heads sharing one KV head x positions) against one prefix
    q = q.reshape(G, n, Hkv, rep, T, d).permute(0, 2, 1, 3, 4, 5).reshape(G, Hkv, n * rep * T, d)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scaling
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.matmul(torch.exp(scores - lse[..., None]).to(v.dtype), v)
    out = out.reshape(G, Hkv, n, rep, T, d).permute(0, 2, 1, 3, 4, 5).reshape(G * n, Hq, T, d)
    lse = lse.reshape(G, Hkv, n, rep, T).permute(0, 2, 1, 3, 4).reshape(G * n, Hq, T)
    return out, lse


def _suffix_part(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, scaling: float):
    B, Hq, T, d = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    rep = Hq // Hkv
    scores = torch.matmul(query.reshape(B, Hkv, rep * T, d), key.transpose(-1, -2)).float() * scaling
    scores = scores.reshape(B, Hkv, rep, T, S).masked_fill(~mask[:, :, None], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)  # a query that sees no suffix key
    probs = torch.exp(scores - safe[..., None]).to(value.dtype).reshape(B, Hkv, rep * T, S)
    out = torch.matmul(probs, value).reshape(B, Hq, T, d)
    return out, lse.reshape(B, Hq, T)


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
    """transformers' attention-function signature; the output is ``[B, T, Hq, d]`` as sdpa's."""
    ctx: CascadeContext = kwargs[KWARG]
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    layer = module.layer_idx
    B, Hq, T, d = query.shape
    out2, lse2 = _suffix_part(query, key, value, ctx.mask, scaling)
    if len(ctx.blocks) == 1 and ctx.blocks[0].in_order:
        out1, lse1 = _prefix_part(query, ctx.blocks[0], layer, scaling)
    else:
        out1 = query.new_zeros(B, Hq, T, d)
        lse1 = query.new_full((B, Hq, T), float("-inf"), dtype=torch.float32)
        for block in ctx.blocks:
            o, lse = _prefix_part(query, block, layer, scaling)
            out1.index_copy_(0, block.rows, o)
            lse1.index_copy_(0, block.rows, lse)
    m = torch.maximum(lse1, lse2)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    w1, w2 = torch.exp(lse1 - m)[..., None], torch.exp(lse2 - m)[..., None]
    out = (out1.float() * w1 + out2.float() * w2) / (w1 + w2).clamp_min(torch.finfo(torch.float32).tiny)
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


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
