"""A LLaVA-style VLM: vision representation -> projector -> causal LM, with perturbation hooks.

The visual tokens of each image replace that image's ``<image>`` placeholder token in the prompt
(one placeholder per image, expanded to the image's tokens), sequences are left-padded, and
generation runs through the LM's own ``generate`` on ``inputs_embeds`` - the same computation as
transformers' ``LlavaForConditionalGeneration``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from lmms_ac.vision.base import VisionRepresentation
from lmms_ac.vlm.hooks import SampleHooks
from lmms_ac.vlm.images import check_image, expand_to_square, mean_fill
from lmms_ac.vlm.prompts import IMAGE_TOKEN
from lmms_ac.vlm.tokenize import PromptTokenizer


@dataclass
class Batch:
    inputs_embeds: torch.Tensor  # [B, T, D]
    attention_mask: torch.Tensor  # [B, T]
    visual_mask: torch.Tensor  # [B, T] bool
    input_lengths: List[int]  # unpadded lengths
    padding_side: str = "left"

    def span(self, b: int) -> slice:
        """Sample ``b``'s positions: one contiguous run, after the padding (left) or before it (right)."""
        total, n = self.inputs_embeds.shape[1], self.input_lengths[b]
        return slice(total - n, total) if self.padding_side == "left" else slice(0, n)


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The decoder's block list of a transformers causal LM (``model.layers`` for Llama-likes)."""
    base = getattr(llm, getattr(llm, "base_model_prefix", "model"), llm)
    for name in ("layers", "h", "blocks"):
        layers = getattr(base, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    for module in llm.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            return module
    raise ValueError(f"cannot find the decoder layers of {type(llm).__name__}")


class LlavaStyleVLM(nn.Module):
    def __init__(
        self,
        vision: VisionRepresentation,
        projector: nn.Module,
        llm: nn.Module,
        tokenizer: Any,
        image_aspect_ratio: str = "pad",
        image_token: str = IMAGE_TOKEN,
        tokenization: str = "joint",
    ):
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.llm = llm
        self.tokenizer = tokenizer
        if image_aspect_ratio not in ("pad", "original"):
            raise ValueError(f"image_aspect_ratio must be 'pad' or 'original', got {image_aspect_ratio!r}")
        self.image_aspect_ratio = image_aspect_ratio
        if image_token not in tokenizer.get_vocab():
            tokenizer.add_tokens([image_token], special_tokens=True)  # a placeholder only: never embedded
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        # 'chunked' = original LLaVA's tokenizer_image_token, 'joint' = llava-hf's processor (lmms_ac/vlm/tokenize.py)
        self.prompt_tokenizer = PromptTokenizer(tokenizer, self.image_token_id, tokenization, image_token)
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token; cannot pad batches")

    # ---------------------------------------------------------------- vision
    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    def _geometry(self, image: Image.Image) -> Image.Image:
        image = check_image(image)
        if self.image_aspect_ratio == "pad":
            return expand_to_square(image, mean_fill(self.vision.image_spec.mean))
        return image

    def base_view_only(self, n_images: int) -> bool:
        """Whether each image of a prompt with ``n_images`` images is encoded as its base view alone
        (LLaVA-OneVision's multi-image prompts); False for every single-grid model."""
        return False

    @torch.no_grad()
    def encode_images(
        self,
        images: Sequence[Image.Image],
        hooks: Sequence[Optional[SampleHooks]] = (),
        image_indices: Sequence[int] = (),
        alone: Sequence[bool] = (),
    ) -> List[torch.Tensor]:
        """Projected visual tokens, one ``[N_i, D_llm]`` tensor per image. ``hooks`` are aligned with
        ``images``; ``image_indices`` give each image's position within its own request; ``alone``
        (tiled models) marks images encoded as their base view alone (``base_view_only``)."""
        if not images:
            return []
        hooks = list(hooks) or [None] * len(images)
        image_indices = list(image_indices) or list(range(len(images)))
        squared = [self._geometry(im) for im in images]
        needs_pixels = [h is not None and h.image is not None for h in hooks]
        if any(needs_pixels):
            pixels = self.vision.pixels(squared)
            for i, h in enumerate(hooks):
                if needs_pixels[i]:
                    pixels[i] = h.image(pixels[i], image_indices[i])
            pixel_values = self.vision.normalize(pixels)
        else:
            pixel_values = self.vision.preprocess(squared)
        tokens = self.vision.encode(pixel_values.to(self.vision.device, self.vision.dtype))
        projected = self.projector(tokens.to(self.dtype).to(self.device))
        return [self.apply_token_hook(h, projected[i], image_indices[i], images[i]) for i, h in enumerate(hooks)]

    def token_views(self, image: Image.Image, alone: bool = False) -> Optional[torch.Tensor]:
        """The view of each visual token of ``image`` on tiled input (``SampleHooks`` docs); None: one grid."""
        return None

    def apply_token_hook(
        self,
        hook: Optional[SampleHooks],
        tokens: torch.Tensor,
        image_index: int,
        image: Image.Image,
        alone: bool = False,
    ) -> torch.Tensor:
        """``hook.tokens`` on one image's visual tokens (with their views on tiled input; ``alone``: encoded as
        its base view alone); the tokens unchanged without a token hook. Both inference paths apply token hooks
        through here."""
        if hook is None or hook.tokens is None:
            return tokens
        views = self.token_views(image, alone)
        return hook.tokens(tokens, image_index) if views is None else hook.tokens(tokens, image_index, views)

    # ---------------------------------------------------------------- text + splice
    def tokenize(self, text: str) -> List[int]:
        return self.prompt_tokenizer.encode(text)

    def splice(self, ids: List[int], visual: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        positions = [i for i, t in enumerate(ids) if t == self.image_token_id]
        if len(positions) != len(visual):
            raise ValueError(f"prompt has {len(positions)} '{IMAGE_TOKEN}' tokens but {len(visual)} images")
        ids_t = torch.tensor(ids, device=self.device)
        text_emb = self.llm.get_input_embeddings()(ids_t.masked_fill(ids_t == self.image_token_id, self.pad_token_id))
        parts, mask_parts, start = [], [], 0
        for pos, vis in zip(positions, visual):
            parts += [text_emb[start:pos], vis.to(text_emb.dtype)]
            mask_parts += [torch.zeros(pos - start, dtype=torch.bool), torch.ones(len(vis), dtype=torch.bool)]
            start = pos + 1
        parts.append(text_emb[start:])
        mask_parts.append(torch.zeros(len(ids) - start, dtype=torch.bool))
        return torch.cat(parts), torch.cat(mask_parts).to(self.device)

    def build_batch(
        self,
        token_ids: Sequence[List[int]],
        images: Sequence[Sequence[Image.Image]],
        hooks: Sequence[Optional[SampleHooks]] = (),
        padding_side: str = "left",
    ) -> Batch:
        hooks = list(hooks) or [None] * len(token_ids)
        flat_images = [im for ims in images for im in ims]
        flat_hooks = [hooks[s] for s, ims in enumerate(images) for _ in ims]
        flat_index = [j for ims in images for j in range(len(ims))]
        flat_alone = [self.base_view_only(len(ims)) for ims in images for _ in ims]
        visual = self.encode_images(flat_images, flat_hooks, flat_index, flat_alone)
        seqs, vmasks, k = [], [], 0
        for ids, ims in zip(token_ids, images):
            emb, vm = self.splice(ids, visual[k : k + len(ims)])
            k += len(ims)
            seqs.append(emb)
            vmasks.append(vm)
        lengths = [len(s) for s in seqs]
        longest = max(lengths)
        pad_emb = self.llm.get_input_embeddings()(torch.tensor([self.pad_token_id], device=self.device))[0]
        B, D = len(seqs), seqs[0].shape[-1]
        embeds = pad_emb.expand(B, longest, D).clone()
        attn = torch.zeros(B, longest, dtype=torch.long, device=self.device)
        vmask = torch.zeros(B, longest, dtype=torch.bool, device=self.device)
        for b, (s, vm) in enumerate(zip(seqs, vmasks)):
            sl = slice(longest - len(s), longest) if padding_side == "left" else slice(0, len(s))
            embeds[b, sl], attn[b, sl], vmask[b, sl] = s, 1, vm
        batch = Batch(embeds, attn, vmask, lengths, padding_side)
        for b, h in enumerate(hooks):  # layer 0 = input embeddings
            if h is not None and h.hidden is not None and h.hidden_layer == 0:
                sel = batch.span(b)
                embeds[b, sel] = h.hidden(embeds[b, sel], vmask[b, sel])
        return batch

    @contextlib.contextmanager
    def hidden_hooks(self, batch: Batch, hooks: Sequence[Optional[SampleHooks]]) -> Iterator[None]:
        """Install forward hooks for samples that perturb a decoder layer's output (prefill only)."""
        by_layer = {}
        for b, h in enumerate(hooks):
            if h is not None and h.hidden is not None and h.hidden_layer >= 1:
                by_layer.setdefault(h.hidden_layer, []).append((b, h))
        if not by_layer:
            yield
            return
        layers = decoder_layers(self.llm)
        handles = []
        for layer, items in by_layer.items():
            if layer > len(layers):
                raise ValueError(f"hidden_layer {layer} but the LLM has {len(layers)} layers")

            def hook(module, args, output, items=items):
                hidden = output[0] if isinstance(output, tuple) else output
                if hidden.shape[1] != batch.inputs_embeds.shape[1]:
                    return output  # a decoding step, not the prefill
                for b, h in items:  # in place: inference only, and this output feeds the next block
                    sel = batch.span(b)
                    hidden[b, sel] = h.hidden(hidden[b, sel], batch.visual_mask[b, sel]).to(hidden.dtype)
                return output

            handles.append(layers[layer - 1].register_forward_hook(hook))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        images: Sequence[Sequence[Image.Image]],
        hooks: Sequence[Optional[SampleHooks]] = (),
        *,
        max_new_tokens: int = 128,
        until: Sequence[str] = (),
        do_sample: bool = False,
        temperature: float = 0.0,
        top_p: Optional[float] = None,
        num_beams: int = 1,
    ) -> List[str]:
        """Generate a continuation per prompt; text is cut at the first ``until`` string. Sampling draws from
        torch's generator as transformers does (lmms-eval's --seed seeds it); nothing here reseeds it."""
        token_ids = [self.tokenize(p) for p in prompts]
        batch = self.build_batch(token_ids, images, hooks)
        kwargs: dict = dict(
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        if do_sample:
            kwargs.update(do_sample=True, temperature=temperature or 1.0, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        stops = [s for s in until if s]
        if stops:
            kwargs["stopping_criteria"] = StoppingCriteriaList([StopOnStrings(self.tokenizer, stops)])
        with self.hidden_hooks(batch, hooks):
            out = self.llm.generate(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, **kwargs)
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [cut_at_stops(t, stops) for t in texts]

    @torch.no_grad()
    def token_logprobs(
        self,
        contexts: Sequence[str],
        continuations: Sequence[str],
        images: Sequence[Sequence[Image.Image]],
        hooks: Sequence[Optional[SampleHooks]] = (),
        add_special_tokens: bool = True,
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Per continuation token: (log P(token | context, images, earlier tokens), greedy token)."""
        full_ids, n_cont = [], []
        for ctx, cont in zip(contexts, continuations):
            ctx_ids, cont_ids = self.prompt_tokenizer.encode_pair(ctx, cont, add_special_tokens)
            full_ids.append(ctx_ids + cont_ids)
            n_cont.append(len(cont_ids))
        batch = self.build_batch(full_ids, images, hooks, padding_side="right")
        with self.hidden_hooks(batch, hooks):
            logits = self.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
        out = []
        for b, (ids, n) in enumerate(zip(full_ids, n_cont)):
            length = batch.input_lengths[b]
            target = torch.tensor(ids[-n:], device=logits.device)
            lp = torch.log_softmax(logits[b, length - n - 1 : length - 1].float(), dim=-1)
            out.append((lp.gather(-1, target[:, None])[:, 0].cpu(), (lp.argmax(-1) == target).cpu()))
        return out

    def loglikelihood(
        self,
        contexts: Sequence[str],
        continuations: Sequence[str],
        images: Sequence[Sequence[Image.Image]],
        hooks: Sequence[Optional[SampleHooks]] = (),
    ) -> List[Tuple[float, bool]]:
        """Sum of log P(continuation tokens | context, images) and whether greedy decoding gives them."""
        return [
            (float(lp.sum()), bool(greedy.all()))
            for lp, greedy in self.token_logprobs(contexts, continuations, images, hooks)
        ]


class StopOnStrings(StoppingCriteria):
    """Stops a row once one of ``stops`` appears in its last few decoded tokens.

    transformers' own ``stop_strings`` builds vocabulary-sized tables on every ``generate`` call
    (about 5 ms here, a fifth of a small model's whole request); decoding a short tail per step is
    enough because a row stops only when a stop string is really there, and the text is cut after.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.lookback = max(len(s) for s in self.stops) + 2  # every token decodes to >= 1 character

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tails = self.tokenizer.batch_decode(input_ids[:, -self.lookback :], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in tails], dtype=torch.bool, device=input_ids.device)


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
