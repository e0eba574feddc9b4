"""Shared-prefix inference on a ``LlavaStyleVLM``: one encoder pass per distinct image, one prefill
per distinct prefix, every request's suffix batched on top.

A batch of rows (input ids + images + hooks + the prefix length the scheduler gave it) runs as:

1. **vision cache** - each distinct image (content key) goes through encoder + projector once
   (``BoundedCache`` of projected tokens); token-stage hooks are applied per request afterwards;
2. the model's own splice (``LlavaStyleVLM.splice``) builds each request's input embeddings;
3. **prefixes** - rows whose prefix embeddings are equal (checked with ``torch.equal``, never
   assumed from the key) share one entry; entries missing from the prefix cache are prefilled
   together (left-padded) and their per-layer keys/values stored unpadded;
4. **suffixes** - with cascade attention (``cascade.py``; any LLM whose attention goes through
   transformers' ``AttentionInterface``) each prefix's keys/values stay one tensor that every row of
   its group attends to as a broadcast view, the suffixes run packed into one sequence (no pad
   position through the LLM), and the batch's cache holds the suffixes only (preallocated for the
   answer); otherwise a ``DynamicCache`` is assembled per batch (each row's prefix copied,
   left-padded to the longest) with a 2D mask over ``[prefix pad | prefix | suffix]``.
   Either way the suffixes run with explicit position ids ``prefix_len + 0, 1, ...``; greedy decoding
   then continues token by token (as transformers' ``generate`` does; each unfinished row's stop
   strings checked on its own tail), or the suffix logits are scored.

A batch may hold every question about an image (``max_rows``): with cascade attention a row costs
its suffix only. Prefixes are prefilled ``prefill_batch`` at a time.

Requests whose hooks act on pixels or hidden states never come here (the wrapper routes them to
the unshared path): a pixel perturbation changes the image per request, a hidden-state probe
reads statistics over the whole sequence, prefix and suffix together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import torch
from PIL import Image

from lmms_ac.vlm import cascade
from lmms_ac.vlm.hooks import SampleHooks
from lmms_ac.vlm.phases import PhaseTimes, maybe_phase
from lmms_ac.vlm.prefix_cache import (
    BoundedCache,
    PrefixEntry,
    accepts,
    batch_prefix_cache,
    cache_argument,
    empty_dynamic_cache,
    image_key,
    kv_tensors,
    per_layer_caches,
    set_packing,
    suffix_cache,
    unsupported_reason,
)


# generation settings that add logits processors or stopping rules to transformers' greedy search;
# with any of them set (non-default) generation falls back to the model's own ``generate``
_NEUTRAL = {
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "sequence_bias": (None,),
    "guidance_scale": (None, 1.0),
    "exponential_decay_length_penalty": (None,),
    "max_time": (None,),
    "stop_strings": (None,),
    "watermarking_config": (None,),
    "renormalize_logits": (None, False),
    "num_return_sequences": (None, 1),
    "token_healing": (None, False),
}


def shareable(hook: Optional[SampleHooks]) -> bool:
    """Whether a request with these hooks may share encoder passes and prefixes (token hooks only)."""
    return hook is None or (hook.image is None and hook.hidden is None)


@dataclass
class Row:
    """One request as the runner sees it."""

    ids: List[int]
    images: List[Image.Image]
    image_keys: List[str]
    hook: Optional[SampleHooks] = None
    prefix_ids: int = 0
    prefix_key: Optional[Hashable] = None
    n_cont: int = 0  # scored continuation tokens (loglikelihood)


@dataclass
class SharingStats:
    images_encoded: int = 0
    image_hits: int = 0
    prefixes_computed: int = 0
    prefix_hits: int = 0  # rows served by a prefix computed for another row or an earlier batch
    prefill_positions: int = 0  # positions run through the LLM before the first new token (padding included)
    prefill_tokens: int = 0  # of which real tokens
    suffix_tokens: int = 0  # of which the rows' own suffixes
    full_tokens: int = 0  # the tokens the same rows would prefill without sharing (each prefix + suffix)

    def as_dict(self) -> Dict[str, int]:
        return dict(self.__dict__)


class PrefixRunner:
    """Shared-prefix inference for one ``LlavaStyleVLM``.

    ``max_prefixes``: prefixes (and encoded images) kept between batches; ``max_rows``: most rows per
    batch (the scheduler's bound; every question about an image when they fit); ``prefill_batch``: most
    prefixes per prefill forward. ``times``: attach a ``PhaseTimes`` to time the phases."""

    def __init__(
        self, vlm: Any, max_prefixes: int = 4, max_rows: int = 64, prefill_batch: int = 8, pack_suffixes: bool = True
    ):
        self.vlm = vlm
        self.pack_suffixes = pack_suffixes  # with cascade attention: suffix prefill without pad positions
        self.prefixes: BoundedCache[PrefixEntry] = BoundedCache(max_prefixes)
        self.images: BoundedCache[torch.Tensor] = BoundedCache(max(max_prefixes, 1))
        self.stats = SharingStats()
        self.max_rows = max(1, int(max_rows))
        self.prefill_batch = max(1, int(prefill_batch))
        self.times: Optional[PhaseTimes] = None
        self.unsupported = unsupported_reason(vlm.llm)
        self.cascade = cascade.supported(vlm.llm) and per_layer_caches()
        if self.cascade:
            cascade.register()
            self.attention_configs = cascade.attention_configs(vlm.llm)
        self.cache_arg = cache_argument(vlm.llm)
        self.keep_logits = accepts(vlm.llm, "logits_to_keep")
        vision = vlm.vision
        self.settings = "|".join(
            [
                type(vision).__name__,
                str(getattr(vision, "spec", "")),
                repr(vision.image_spec),
                str(vlm.image_aspect_ratio),
                str(vision.dtype),
            ]
        )

    # ------------------------------------------------------------------ keys and cache upkeep
    def image_key(self, image: Image.Image) -> str:
        return image_key(image, self.settings)

    def release(self, keys: Sequence[Hashable]) -> None:
        """Drop entries no later batch needs (the scheduler's ``Batch.release``)."""
        self.prefixes.discard(keys)
        self.images.discard(keys)

    def clear(self) -> None:
        self.prefixes.clear()
        self.images.clear()

    def greedy_supported(self, do_sample: bool, num_beams: int) -> bool:
        """Plain greedy search: the only decoding this runner reproduces token for token."""
        if do_sample or num_beams != 1 or self.unsupported:
            return False
        config = getattr(self.vlm.llm, "generation_config", None)
        return config is None or all(getattr(config, k, None) in ok for k, ok in _NEUTRAL.items())

    # ------------------------------------------------------------------ inputs
    def _visual(self, rows: Sequence[Row]) -> List[List[torch.Tensor]]:
        """Each row's visual tokens: one encoder + projector pass per distinct image (batched), then
        the row's own token hooks."""
        local: Dict[str, torch.Tensor] = {}
        todo: Dict[str, Tuple[Image.Image, bool]] = {}
        for row in rows:
            alone = self.vlm.base_view_only(len(row.images))
            for im, key in zip(row.images, self._encoding_keys(row)):
                if key in local or key in todo:
                    continue
                cached = self.images.get(key)
                if cached is not None:
                    local[key] = cached
                else:
                    todo[key] = (im, alone)
        if todo:
            with maybe_phase(self.times, "image encoding"):
                encoded = self.vlm.encode_images(
                    [im for im, _ in todo.values()], alone=[alone for _, alone in todo.values()]
                )
            for key, t in zip(todo, encoded):
                local[key] = t
                self.images.put(key, t)
        uses = sum(len(r.image_keys) for r in rows)
        self.stats.images_encoded += len(todo)
        self.stats.image_hits += uses - len(todo)
        out = []
        for row in rows:
            alone = self.vlm.base_view_only(len(row.images))
            visual = []
            for j, key in enumerate(self._encoding_keys(row)):
                # token perturbations act after the shared encoder pass
                visual.append(self.vlm.apply_token_hook(row.hook, local[key], j, row.images[j], alone))
            out.append(visual)
        return out

    def _encoding_keys(self, row: Row) -> List[str]:
        """The cache keys of a row's encoded images: an image encoded as its base view alone (OneVision's
        multi-image prompts) is another encoding of the same image."""
        if self.vlm.base_view_only(len(row.images)):
            return [f"{key}#base-view" for key in row.image_keys]
        return list(row.image_keys)

    def _embed(self, rows: Sequence[Row]) -> Tuple[List[torch.Tensor], List[int]]:
        """Each row's input embeddings ``[L, D]`` and its prefix length in embedding positions."""
        embeds, prefix = [], []
        for row, visual in zip(rows, self._visual(rows)):
            emb, _ = self.vlm.splice(row.ids, visual)
            n_img = sum(1 for t in row.ids[: row.prefix_ids] if t == self.vlm.image_token_id)
            prefix.append(row.prefix_ids + sum(len(v) - 1 for v in visual[:n_img]))
            embeds.append(emb)
        return embeds, prefix

    def _pad_embedding(self) -> torch.Tensor:
        return self.vlm.llm.get_input_embeddings()(torch.tensor([self.vlm.pad_token_id], device=self.vlm.device))[0]

    # ------------------------------------------------------------------ prefixes
    def _resolve_prefixes(
        self, rows: Sequence[Row], embeds: Sequence[torch.Tensor], prefix: Sequence[int]
    ) -> List[Optional[PrefixEntry]]:
        entries: List[Optional[PrefixEntry]] = [None] * len(rows)
        pending: List[Tuple[Hashable, torch.Tensor, List[int]]] = []  # (key, prefix embeds, rows)
        for b, (row, emb, p) in enumerate(zip(rows, embeds, prefix)):
            if not p or row.prefix_key is None:
                continue
            head = emb[:p]
            cached = self.prefixes.get(row.prefix_key)
            if cached is not None and cached.length == p and torch.equal(cached.embeds, head):
                entries[b] = cached
                self.stats.prefix_hits += 1
                continue
            for key, pe, members in pending:
                if key == row.prefix_key and pe.shape == head.shape and torch.equal(pe, head):
                    members.append(b)
                    self.stats.prefix_hits += 1
                    break
            else:
                pending.append((row.prefix_key, head, [b]))
        if pending:
            with maybe_phase(self.times, "shared prefill"):
                computed = self._prefill([pe for _, pe, _ in pending])
            for (key, _, members), entry in zip(pending, computed):
                for b in members:
                    entries[b] = entry
                self.prefixes.put(key, entry)  # the last variant of a key wins; released when done
        return entries

    @torch.no_grad()
    def _prefill(self, heads: Sequence[torch.Tensor]) -> List[PrefixEntry]:
        """Each prefix's keys/values. Prefixes that open alike (the system prompt before each image) get
        that common opening prefilled once and the rest on top of it (cascade attention)."""
        common = _common_rows(heads) if self.cascade and len(heads) >= 2 else 0
        out: List[PrefixEntry] = []
        if common < MIN_COMMON:
            for chunk in self._chunks(len(heads)):
                out += self._prefill_plain([heads[i] for i in chunk])
        else:
            (base,) = self._prefill_plain([heads[0][:common]])
            for chunk in self._chunks(len(heads)):
                rests = [heads[i][common:] for i in chunk]
                run = self._on_prefixes([base] * len(chunk), rests, "left", True, 0)
                ls = max(len(r) for r in rests)
                for j, i in enumerate(chunk):
                    start = ls - len(rests[j])
                    kv = [
                        (torch.cat([bk, k[j, :, start:ls]], dim=1), torch.cat([bv, v[j, :, start:ls]], dim=1))
                        for (bk, bv), (k, v) in zip(base.kv, kv_tensors(run.cache))
                    ]
                    out.append(PrefixEntry(heads[i].clone(), kv))
        self.stats.prefixes_computed += len(heads)
        return out

    def _chunks(self, n: int) -> List[List[int]]:
        """Indices ``0..n-1`` in chunks of at most ``prefill_batch`` (the memory bound of one prefill)."""
        return [list(range(i, min(i + self.prefill_batch, n))) for i in range(0, n, self.prefill_batch)]

    def _prefill_plain(self, heads: Sequence[torch.Tensor]) -> List[PrefixEntry]:
        """Run the prefixes (left-padded) and keep each one's keys/values, unpadded and contiguous."""
        n, longest = len(heads), max(h.shape[0] for h in heads)
        D = heads[0].shape[-1]
        embeds = self._pad_embedding().expand(n, longest, D).clone()
        mask = torch.zeros(n, longest, dtype=torch.long, device=embeds.device)
        for i, h in enumerate(heads):
            embeds[i, longest - len(h) :] = h
            mask[i, longest - len(h) :] = 1
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = empty_dynamic_cache()
        kwargs = {self.cache_arg: cache, "use_cache": True}
        if self.keep_logits:
            kwargs["logits_to_keep"] = 1
        self.vlm.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, **kwargs)
        self.stats.prefill_positions += n * longest
        self.stats.prefill_tokens += sum(len(h) for h in heads)
        layers = kv_tensors(cache)
        out = []
        for i, h in enumerate(heads):
            start = longest - len(h)
            kv = [(k[i, :, start:].contiguous(), v[i, :, start:].contiguous()) for k, v in layers]
            out.append(PrefixEntry(h.clone(), kv))
        return out

    # ------------------------------------------------------------------ suffix pass
    def _suffix_pass(self, rows: Sequence[Row], padding_side: str, keep_last: bool, reserve: int = 0) -> "_Pass":
        """Prefixes (cached or computed) + one forward over the suffixes."""
        embeds, prefix = self._embed(rows)
        self.stats.full_tokens += sum(len(e) for e in embeds)
        entries = self._resolve_prefixes(rows, embeds, prefix)
        prefix = [e.length if e is not None else 0 for e in entries]
        suffixes = [emb[p:] for emb, p in zip(embeds, prefix)]
        self.stats.suffix_tokens += sum(len(s) for s in suffixes)
        with maybe_phase(self.times, "suffix prefill"):
            return self._on_prefixes(entries, suffixes, padding_side, keep_last, reserve)

    def _on_prefixes(
        self,
        entries: Sequence[Optional[PrefixEntry]],
        suffixes: Sequence[torch.Tensor],
        padding_side: str,
        keep_last: bool,
        reserve: int,
    ) -> "_Pass":
        """One forward of each row's ``suffixes`` on top of its prefix entry (None: no prefix). With cascade
        attention the suffixes go through the LLM packed into one sequence (no pad position); the cache and
        the attention see the padded layout either way."""
        prefix = [e.length if e is not None else 0 for e in entries]
        B, device = len(suffixes), suffixes[0].device
        ls = max(len(s) for s in suffixes)
        use_cascade = self.cascade and any(e is not None for e in entries)
        packing = None
        if use_cascade and self.pack_suffixes and min(len(s) for s in suffixes) > 0:
            packing = cascade.Packing.of([len(s) for s in suffixes], ls, padding_side, device)
            x = torch.cat(list(suffixes))[None]
            position_ids = torch.cat([torch.arange(p, p + len(s), device=device) for p, s in zip(prefix, suffixes)])
            position_ids = position_ids[None]
            valid = torch.zeros(B, ls + reserve, dtype=torch.bool, device=device)  # real suffix/answer positions
            valid[packing.rows, packing.cols] = True
        else:
            x, position_ids, valid = self._padded(suffixes, prefix, ls, padding_side, reserve)
        valid[:, ls:] = True
        if use_cascade:
            template = next(e for e in entries if e is not None).kv
            run = _Pass(self, suffix_cache(template, B, ls + reserve), valid, ls, prefix, suffixes)
            run.context = cascade.CascadeContext(B, cascade.build_blocks(entries, device))
        else:
            cache, lp = batch_prefix_cache(entries, reserve=ls + reserve)
            prefix_mask = torch.zeros(B, lp, dtype=torch.bool, device=device)
            for b, p in enumerate(prefix):
                prefix_mask[b, lp - p :] = True
            run = _Pass(self, cache, torch.cat([prefix_mask, valid], dim=-1), lp + ls, prefix, suffixes)
        run.logits = run.forward(x, position_ids, keep_last, packing)
        self.stats.prefill_positions += int(x.shape[0] * x.shape[1])
        self.stats.prefill_tokens += sum(len(s) for s in suffixes)
        run.last = torch.tensor([p + len(s) - 1 for p, s in zip(prefix, suffixes)], device=device)
        return run

    def _padded(
        self, suffixes: Sequence[torch.Tensor], prefix: Sequence[int], ls: int, padding_side: str, reserve: int
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The suffixes padded to ``ls`` on ``padding_side``: embeddings, position ids and the real positions."""
        B, D, device = len(suffixes), suffixes[0].shape[-1], suffixes[0].device
        x = self._pad_embedding().expand(B, ls, D).clone()
        valid = torch.zeros(B, ls + reserve, dtype=torch.bool, device=device)
        position_ids = torch.zeros(B, ls, dtype=torch.long, device=device)
        for b, (s, p) in enumerate(zip(suffixes, prefix)):
            sl = slice(ls - len(s), ls) if padding_side == "left" else slice(0, len(s))
            x[b, sl] = s
            valid[b, sl] = True
            position_ids[b, sl] = torch.arange(p, p + len(s), device=device)
        return x, position_ids, valid

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def generate(self, rows: Sequence[Row], *, max_new_tokens: int, until: Sequence[str] = ()) -> List[str]:
        """Greedy generation, token for token what ``LlavaStyleVLM.generate`` gives for these rows."""
        from lmms_ac.vlm.model import cut_at_stops

        tokenizer = self.vlm.tokenizer
        stops = [s for s in until if s]
        run = self._suffix_pass(rows, "left", keep_last=True, reserve=max_new_tokens)
        logits = run.logits
        B, device = len(rows), logits.device
        eos = tokenizer.eos_token_id
        eos_ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos], device=device)
        pad = torch.tensor(self.vlm.pad_token_id, device=device)
        generated = torch.empty(B, max_new_tokens, dtype=torch.long, device=device)
        unfinished = torch.ones(B, dtype=torch.bool, device=device)
        tails = TailStops(tokenizer, stops) if stops else None
        embed = self.vlm.llm.get_input_embeddings()
        last = run.last
        n = 0
        for step in range(max_new_tokens):
            nxt = torch.where(unfinished, logits[:, -1, :].float().argmax(-1), pad)
            generated[:, step] = nxt
            n = step + 1
            unfinished = unfinished & ~torch.isin(nxt, eos_ids)
            if tails is not None:
                unfinished = tails.update(generated[:, :n], unfinished)
            if step + 1 == max_new_tokens or not bool(unfinished.any()):
                break
            last = last + 1
            with maybe_phase(self.times, "decode step"):
                logits = run.forward(embed(nxt)[:, None], last[:, None], True)
        texts = tokenizer.batch_decode(generated[:, :n], skip_special_tokens=True)
        return [cut_at_stops(t, stops) for t in texts]

    @torch.no_grad()
    def token_logprobs(self, rows: Sequence[Row]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per continuation token: (log-probability, whether greedy picks it), as
        ``LlavaStyleVLM.token_logprobs``; each row's last ``n_cont`` ids are the continuation."""
        run = self._suffix_pass(rows, "right", keep_last=False)
        logits = run.logits
        out = []
        for b, (row, s) in enumerate(zip(rows, [len(x) for x in run.suffixes])):
            n = row.n_cont
            if n < 1 or len(row.ids) - n - 1 < row.prefix_ids:
                raise ValueError(f"row {b}: the prefix must end before the last context token")
            # full-sequence positions [L-n-1, L-1) in suffix coordinates (L = p + s)
            start = s - n - 1
            target = torch.tensor(row.ids[-n:], device=logits.device)
            lp = torch.log_softmax(logits[b, start : start + n].float(), dim=-1)
            out.append((lp.gather(-1, target[:, None])[:, 0].cpu(), (lp.argmax(-1) == target).cpu()))
        return out


MIN_COMMON = 8  # a shorter common opening of several prefixes is not worth a forward pass of its own


def _common_rows(heads: Sequence[torch.Tensor]) -> int:
    """How many leading rows (embedding positions) all ``heads`` share, at most all but the last of each."""
    n = min(len(h) for h in heads) - 1
    if n <= 0:
        return 0
    same = torch.ones(n, dtype=torch.bool, device=heads[0].device)
    for h in heads[1:]:
        same &= (h[:n] == heads[0][:n]).all(dim=-1)
    return int(same.long().cumprod(0).sum())


class _Pass:
    """One batch's forward passes over its cache: the suffix prefill, then one decoding step at a time.
    ``valid`` marks the real positions of the part of the sequence the cache holds (the suffixes with
    cascade attention; prefix pad + prefixes + suffixes otherwise); ``filled`` of them are written."""

    def __init__(self, runner: PrefixRunner, cache: Any, valid: torch.Tensor, start: int, prefix, suffixes):
        self.runner, self.cache, self.valid = runner, cache, valid
        self.filled = start - max((len(s) for s in suffixes), default=0)  # positions before this batch's suffixes
        self.prefix, self.suffixes = prefix, suffixes
        self.context: Optional[cascade.CascadeContext] = None
        self.logits: Optional[torch.Tensor] = None
        self.last: Optional[torch.Tensor] = None

    def forward(
        self, x: torch.Tensor, position_ids: torch.Tensor, keep_last: bool, packing: Optional[cascade.Packing] = None
    ) -> torch.Tensor:
        """Logits ``[B, T, V]`` (``[B, 1, V]`` with ``keep_last``); ``packing``: ``x`` is ``[1, N, D]``, the rows'
        tokens one after the other (cascade attention only), and the logits come back padded."""
        runner = self.runner
        end = self.filled + (x.shape[1] if packing is None else packing.width)
        kwargs = {runner.cache_arg: self.cache, "use_cache": True}
        if keep_last and runner.keep_logits:
            kwargs["logits_to_keep"] = 1 if packing is None else packing.last
        if self.context is None:
            mask = self.valid[:, :end].long()
            logits = runner.vlm.llm(inputs_embeds=x, attention_mask=mask, position_ids=position_ids, **kwargs).logits
        else:
            logits = self._cascade_forward(x, position_ids, kwargs, end, packing)
        self.filled = end
        if packing is None:
            return logits
        # [1, B, V] (each row's last token) or [1, N, V] (every token) -> rows
        return logits[0][:, None] if "logits_to_keep" in kwargs else packing.unpack(logits[0], self.context.batch)

    def _cascade_forward(
        self, x: torch.Tensor, position_ids: torch.Tensor, kwargs: Dict[str, Any], end: int, packing
    ) -> torch.Tensor:
        keys = torch.arange(end, device=x.device)
        queries = torch.arange(self.filled, end, device=x.device)
        causal = keys[None, :] <= queries[:, None]  # [T, end]
        self.context.mask = (self.valid[:, None, None, :end] & causal[None, None]).contiguous()
        self.context.packing = packing
        set_packing(self.cache, packing)
        try:
            with cascade.use_cascade(self.runner.attention_configs):
                out = self.runner.vlm.llm(
                    inputs_embeds=x, position_ids=position_ids, **kwargs, **{cascade.KWARG: self.context}
                )
        finally:
            self.context.packing = None
            set_packing(self.cache, None)
        return out.logits


class TailStops:
    """Per-row stop strings: each step decodes only the unfinished rows' last few tokens (a stop string
    is at most ``lookback`` tokens long, every token decoding to at least one character)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.lookback = max(len(s) for s in self.stops) + 2

    def update(self, generated: torch.Tensor, unfinished: torch.Tensor) -> torch.Tensor:
        rows = unfinished.nonzero()[:, 0].tolist()
        if not rows:
            return unfinished
        tails = self.tokenizer.batch_decode(generated[rows, -self.lookback :].tolist(), skip_special_tokens=True)
        out = unfinished.clone()
        for b, tail in zip(rows, tails):
            if any(s in tail for s in self.stops):
                out[b] = False
        return out
