"""Bounded caches for shared-prefix inference, and the few transformers cache calls it needs.

* ``BoundedCache``: an LRU map holding at most ``max_entries`` items; the scheduler also releases
  entries as soon as no later batch needs them, so the cache never grows with the dataset.
* ``image_key``: content hash of a decoded image plus the preprocessing settings that turn it into
  visual tokens (two requests with equal keys get bit-identical encoder + projector outputs).
* ``PrefixEntry``: one prefix's input embeddings and per-layer keys/values ``[H, P, d]``.
* ``kv_tensors`` / ``batch_prefix_cache`` / ``cache_argument``: read and build a ``DynamicCache``
  across transformers versions (``cache=`` in 5.x, ``past_key_values=`` before).

Memory of one entry: ``layers x 2 x kv_heads x head_dim x tokens x bytes`` (see ``kv_bytes``);
LLaVA-1.5-7B (32 layers, 32 heads of 128, float16) with a 576-token image plus a ~40-token
system prompt: 32 x 2 x 32 x 128 x 616 x 2 B = 323 MB (0.5 MiB per token).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, Hashable, Iterable, List, Optional, Sequence, Tuple, TypeVar

import torch

V = TypeVar("V")


class BoundedCache(Generic[V]):
    """Least-recently-used map with at most ``max_entries`` entries."""

    def __init__(self, max_entries: int):
        if int(max_entries) < 1:
            raise ValueError(f"a cache must hold at least 1 entry, got max_entries={max_entries}")
        self.max_entries = int(max_entries)
        self._data: "OrderedDict[Hashable, V]" = OrderedDict()

    def get(self, key: Hashable) -> Optional[V]:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    def discard(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data


def image_key(image: Any, settings: str) -> str:
    """SHA-256 of the decoded image (mode, size, pixels) and the preprocessing ``settings``: an
    in-memory cache key. Not :func:`lmms_ac.robustness.synthetic_store.store_key`, which hashes the
    image alone into the keys written in synthetic stores (SHA-1, 24 hex digits) and must not change."""
    h = hashlib.sha256()
    h.update(settings.encode("utf-8"))
    h.update(f"\x1f{image.mode}\x1f{image.size[0]}x{image.size[1]}\x1f".encode("ascii"))
    h.update(image.tobytes())
    return h.hexdigest()


@dataclass
class PrefixEntry:
    embeds: torch.Tensor  # [P, D]: the prefix's input embeddings, checked before every reuse
    kv: List[Tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each [H, P, d]

    @property
    def length(self) -> int:
        return int(self.embeds.shape[0])

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.kv)


def kv_bytes(layers: int, kv_heads: int, head_dim: int, tokens: int, bytes_per_value: int) -> int:
    """Bytes of one prefix's key/value cache: layers x 2 x kv_heads x head_dim x tokens x bytes."""
    return int(layers) * 2 * int(kv_heads) * int(head_dim) * int(tokens) * int(bytes_per_value)


def kv_tensors(cache: Any) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer ``(keys, values)`` ``[B, H, T, d]`` of a transformers cache (any 4.4x/5.x layout)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [(k, v) for k, v in cache]  # legacy tuple of tuples


def batch_prefix_cache(entries: Sequence[Optional["PrefixEntry"]], reserve: int = 0) -> Tuple[Any, int]:
    """A ``DynamicCache`` whose row ``b`` holds ``entries[b]``'s keys/values left-padded (zeros, masked
    by the caller) to the longest prefix; None rows are all padding. Returns (cache, prefix length).

    With per-layer cache objects (transformers 5.x) the tensors are allocated once with room for
    ``reserve`` more positions and later tokens are written in place (no concatenation of the whole
    cache at every decoding step); older versions get a plain ``DynamicCache``."""
    from transformers import DynamicCache

    lp = max((e.length for e in entries if e is not None), default=0)
    if lp == 0:
        return DynamicCache(), 0
    template = next(e for e in entries if e is not None).kv
    B, total = len(entries), lp + max(0, int(reserve))
    buffers = []
    for layer, (k0, v0) in enumerate(template):
        kb = k0.new_empty(B, k0.shape[0], total, k0.shape[-1])
        vb = v0.new_empty(B, v0.shape[0], total, v0.shape[-1])
        for b, e in enumerate(entries):
            n = e.length if e is not None else 0
            kb[b, :, : lp - n].zero_()
            vb[b, :, : lp - n].zero_()
            if n:
                kb[b, :, lp - n : lp] = e.kv[layer][0]
                vb[b, :, lp - n : lp] = e.kv[layer][1]
        buffers.append((kb, vb))
    try:
        cache = DynamicCache(ddp_cache_data=[(kb[:, :, :0], vb[:, :, :0]) for kb, vb in buffers])
    except TypeError:  # transformers < 4.54: legacy constructor, plain tensors
        return DynamicCache.from_legacy_cache(tuple((kb[:, :, :lp], vb[:, :, :lp]) for kb, vb in buffers)), lp
    if not hasattr(cache, "layers"):
        return DynamicCache(ddp_cache_data=[(kb[:, :, :lp], vb[:, :, :lp]) for kb, vb in buffers]), lp
    reserved = _reserved_layer_class()
    for layer, (kb, vb) in zip(cache.layers, buffers):
        layer.__class__ = reserved
        layer.attach(kb, vb, lp)
    return cache, lp


def suffix_cache(template: Sequence[Tuple[torch.Tensor, torch.Tensor]], batch: int, capacity: int) -> Any:
    """An empty ``DynamicCache`` for ``batch`` rows of suffix keys/values (cascade attention keeps the
    prefixes apart), preallocated for ``capacity`` positions and shaped like ``template``'s layers
    (``[H, P, d]`` each). Needs per-layer cache objects (transformers >= 4.54)."""
    from transformers import DynamicCache

    buffers = [
        (k.new_zeros(batch, k.shape[0], capacity, k.shape[-1]), v.new_zeros(batch, v.shape[0], capacity, v.shape[-1]))
        for k, v in template
    ]
    cache = DynamicCache(ddp_cache_data=[(kb[:, :, :0], vb[:, :, :0]) for kb, vb in buffers])
    reserved = _reserved_layer_class()
    for layer, (kb, vb) in zip(cache.layers, buffers):
        layer.__class__ = reserved
        layer.attach(kb, vb, 0)
    return cache


def set_packing(cache: Any, packing: Optional[Any]) -> None:
    """Make a ``suffix_cache``'s layers scatter the next forward's packed keys/values (``cascade.Packing``) into
    their padded layout; None: append as usual."""
    for layer in cache.layers:
        layer.packing = packing


def per_layer_caches() -> bool:
    """Whether this transformers' ``DynamicCache`` has per-layer objects (what ``suffix_cache`` needs)."""
    from transformers import DynamicCache

    try:
        return hasattr(DynamicCache(ddp_cache_data=[]), "layers")
    except TypeError:
        return False


@functools.lru_cache(maxsize=None)
def _reserved_layer_class():
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        """A ``DynamicLayer`` over a preallocated buffer: ``keys``/``values`` are views of its
        filled part, ``update`` writes in place and doubles the buffer when full."""

        def attach(self, kb: torch.Tensor, vb: torch.Tensor, filled: int) -> None:
            self._kb, self._vb, self._n = kb, vb, int(filled)
            self.keys, self.values = kb[:, :, : self._n], vb[:, :, : self._n]
            self.is_initialized = True
            self.device = kb.device
            self.packing = None  # a cascade.Packing while a packed forward runs: scatter, don't append

        def update(self, key_states, value_states, *args, **kwargs):
            packing = self.packing
            n = key_states.shape[-2] if packing is None else packing.width
            if self._n + n > self._kb.shape[-2]:  # out of room: double it
                grow = max(n, self._kb.shape[-2])
                kb = torch.cat([self._kb, self._kb.new_empty(*self._kb.shape[:2], grow, self._kb.shape[-1])], dim=2)
                vb = torch.cat([self._vb, self._vb.new_empty(*self._vb.shape[:2], grow, self._vb.shape[-1])], dim=2)
                self._kb, self._vb = kb, vb
            if packing is None:
                self._kb[:, :, self._n : self._n + n] = key_states
                self._vb[:, :, self._n : self._n + n] = value_states
            else:  # [1, H, N, d] packed -> each token's (row, column) of the padded layout; pads stay as they were
                cols = packing.cols + self._n
                self._kb[packing.rows, :, cols] = key_states[0].transpose(0, 1)
                self._vb[packing.rows, :, cols] = value_states[0].transpose(0, 1)
            self._n += n
            self.keys, self.values = self._kb[:, :, : self._n], self._vb[:, :, : self._n]
            return self.keys, self.values

    return ReservedLayer


def empty_dynamic_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


def cache_argument(llm: Any) -> str:
    """The keyword a causal LM's ``forward`` takes its KV cache by."""
    params = inspect.signature(llm.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def accepts(llm: Any, name: str) -> bool:
    return name in inspect.signature(llm.forward).parameters


def unsupported_reason(llm: Any) -> Optional[str]:
    """Why prefix caches cannot be spliced for this LLM (None when they can): sliding-window or
    non-attention layers keep state that a padded, concatenated key/value cache does not model."""
    config = getattr(llm, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if config is None:
        return "the LLM has no config"
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return f"{type(llm).__name__} uses sliding-window attention"
    layer_types = getattr(config, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        return f"{type(llm).__name__} has non-full-attention layers ({sorted(set(layer_types))})"
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder LLMs are not supported"
    return None
