"""Shared-prefix inference on a ``LlavaStyleVLM``: one encoder pass per distinct image, one prefill
per distinct prefix, every request's suffix batched on top.

A batch of rows (input ids + images + hooks + the prefix length the scheduler gave it) runs as:

1. **vision cache** - each distinct image (content key) goes through encoder + projector once
   (``BoundedCache`` of projected tokens); token-stage hooks are applied per request afterwards;
2. the model's own splice (``LlavaStyleVLM.splice``) builds each request's input embeddings;
3. **prefixes** - rows whose prefix embeddings are equal (checked with ``torch.equal``, never
   assumed from the key) share one entry; entries missing from the prefix cache are prefilled
   together (left-padded) and their per-layer keys/values stored unpadded;
4. **suffixes** - a ``DynamicCache`` is assembled per batch (each row's prefix left-padded to the
   longest), the suffixes run on top with a 2D attention mask over ``[prefix pad | prefix |
   suffix (+ pad)]`` and explicit position ids ``prefix_len + 0, 1, ...``; greedy decoding then
   continues token by token (as transformers' ``generate`` does), or the suffix logits are scored.

Requests whose hooks act on pixels or hidden states never come here (the wrapper routes them to
the unshared path): a pixel perturbation changes the image per request, a hidden-state probe
reads statistics over the whole sequence, prefix and suffix together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import torch
from PIL import Image

from lmms_ac.vlm.hooks import SampleHooks
from lmms_ac.vlm.prefix_cache import (
    BoundedCache,
    PrefixEntry,
    accepts,
    cache_argument,
    empty_dynamic_cache,
    image_key,
    kv_tensors,
    batch_prefix_cache,
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

    def as_dict(self) -> Dict[str, int]:
        return dict(self.__dict__)


class PrefixRunner:
    def __init__(self, vlm: Any, max_prefixes: int = 4):
        self.vlm = vlm
        self.prefixes: BoundedCache[PrefixEntry] = BoundedCache(max_prefixes)
        self.images: BoundedCache[torch.Tensor] = BoundedCache(max(max_prefixes, 1))
        self.stats = SharingStats()
        self.unsupported = unsupported_reason(vlm.llm)
        self._cache_arg = cache_argument(vlm.llm)
        self._keep_logits = accepts(vlm.llm, "logits_to_keep")
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
        todo: Dict[str, Image.Image] = {}
        for row in rows:
            for im, key in zip(row.images, row.image_keys):
                if key in local or key in todo:
                    continue
                cached = self.images.get(key)
                if cached is not None:
                    local[key] = cached
                else:
                    todo[key] = im
        if todo:
            for key, t in zip(todo, self.vlm.encode_images(list(todo.values()))):
                local[key] = t
                self.images.put(key, t)
        uses = sum(len(r.image_keys) for r in rows)
        self.stats.images_encoded += len(todo)
        self.stats.image_hits += uses - len(todo)
        out = []
        for row in rows:
            visual = []
            for j, key in enumerate(row.image_keys):
                # token perturbations act after the shared encoder pass
                visual.append(self.vlm.apply_token_hook(row.hook, local[key], j, row.images[j]))
            out.append(visual)
        return out

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
            computed = self._prefill([pe for _, pe, _ in pending])
            for (key, _, members), entry in zip(pending, computed):
                for b in members:
                    entries[b] = entry
                self.prefixes.put(key, entry)  # the last variant of a key wins; released when done
        return entries

    @torch.no_grad()
    def _prefill(self, heads: Sequence[torch.Tensor]) -> List[PrefixEntry]:
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
        kwargs = {self._cache_arg: cache, "use_cache": True}
        if self._keep_logits:
            kwargs["logits_to_keep"] = 1
        self.vlm.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, **kwargs)
        self.stats.prefixes_computed += n
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
    def _suffix_pass(self, rows: Sequence[Row], padding_side: str, keep_last: bool, reserve: int = 0):
        """Prefixes (cached or computed) + one forward over the suffixes. Returns the logits, the
        batch's cache, 2D mask, the last position id per row, and per-row (prefix, suffix) lengths."""
        embeds, prefix = self._embed(rows)
        entries = self._resolve_prefixes(rows, embeds, prefix)
        prefix = [e.length if e is not None else 0 for e in entries]
        suffixes = [emb[p:] for emb, p in zip(embeds, prefix)]
        B, D = len(rows), embeds[0].shape[-1]
        device = embeds[0].device
        lp = max(prefix)
        ls = max(len(s) for s in suffixes)
        cache, _ = batch_prefix_cache(entries, reserve=ls + reserve)

        x = self._pad_embedding().expand(B, ls, D).clone()
        mask = torch.zeros(B, lp + ls, dtype=torch.long, device=device)
        position_ids = torch.zeros(B, ls, dtype=torch.long, device=device)
        for b, (s, p) in enumerate(zip(suffixes, prefix)):
            sl = slice(ls - len(s), ls) if padding_side == "left" else slice(0, len(s))
            x[b, sl] = s
            mask[b, lp - p : lp] = 1
            mask[b, lp + sl.start : lp + sl.stop] = 1
            position_ids[b, sl] = torch.arange(p, p + len(s), device=device)
        kwargs = {self._cache_arg: cache, "use_cache": True}
        if keep_last and self._keep_logits:
            kwargs["logits_to_keep"] = 1
        logits = self.vlm.llm(inputs_embeds=x, attention_mask=mask, position_ids=position_ids, **kwargs).logits
        self.stats.prefill_positions += B * ls
        self.stats.prefill_tokens += sum(len(s) for s in suffixes)
        last = torch.tensor([p + len(s) - 1 for p, s in zip(prefix, suffixes)], device=device)
        return logits, cache, mask, last, list(zip(prefix, [len(s) for s in suffixes]))

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def generate(self, rows: Sequence[Row], *, max_new_tokens: int, until: Sequence[str] = ()) -> List[str]:
        """Greedy generation, token for token what ``LlavaStyleVLM.generate`` gives for these rows."""
        from lmms_ac.vlm.model import StopOnStrings, cut_at_stops

        tokenizer = self.vlm.tokenizer
        stops = [s for s in until if s]
        criterion = StopOnStrings(tokenizer, stops) if stops else None
        logits, cache, mask, last, _ = self._suffix_pass(rows, "left", keep_last=True, reserve=max_new_tokens)
        B, device = len(rows), mask.device
        eos = tokenizer.eos_token_id
        eos_ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos], device=device)
        pad = torch.tensor(self.vlm.pad_token_id, device=device)
        generated = torch.empty(B, 0, dtype=torch.long, device=device)
        unfinished = torch.ones(B, dtype=torch.bool, device=device)
        embed = self.vlm.llm.get_input_embeddings()
        kwargs = {self._cache_arg: cache, "use_cache": True}
        if self._keep_logits:
            kwargs["logits_to_keep"] = 1
        for step in range(max_new_tokens):
            scores = logits[:, -1, :].float()
            nxt = torch.where(unfinished, scores.argmax(-1), pad)
            generated = torch.cat([generated, nxt[:, None]], dim=-1)
            unfinished = unfinished & ~torch.isin(nxt, eos_ids)
            if criterion is not None:
                unfinished = unfinished & ~criterion(generated, scores)
            if not bool(unfinished.any()) or step + 1 == max_new_tokens:
                break
            mask = torch.cat([mask, mask.new_ones(B, 1)], dim=-1)
            last = last + 1
            logits = self.vlm.llm(
                inputs_embeds=embed(nxt)[:, None], attention_mask=mask, position_ids=last[:, None], **kwargs
            ).logits
        texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [cut_at_stops(t, stops) for t in texts]

    @torch.no_grad()
    def token_logprobs(self, rows: Sequence[Row]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per continuation token: (log-probability, whether greedy picks it), as
        ``LlavaStyleVLM.token_logprobs``; each row's last ``n_cont`` ids are the continuation."""
        logits, _, _, _, lengths = self._suffix_pass(rows, "right", keep_last=False)
        out = []
        for b, (row, (p, s)) in enumerate(zip(rows, lengths)):
            n = row.n_cont
            if n < 1 or len(row.ids) - n - 1 < row.prefix_ids:
                raise ValueError(f"row {b}: the prefix must end before the last context token")
            # full-sequence positions [L-n-1, L-1) in suffix coordinates (L = p + s)
            start = s - n - 1
            target = torch.tensor(row.ids[-n:], device=logits.device)
            lp = torch.log_softmax(logits[b, start : start + n].float(), dim=-1)
            out.append((lp.gather(-1, target[:, None])[:, 0].cpu(), (lp.argmax(-1) == target).cpu()))
        return out
