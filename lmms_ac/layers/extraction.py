"""Visual-token hidden states of a ``LlavaStyleVLM``, every layer from one forward per image batch.

Geometry is the C score's: each image is letterboxed to the encoder's square input (aspect kept,
centred, zero padding by default; ``pad="mean"`` fills with the encoder's mean colour as LLaVA's
``expand2square`` does), so keypoints map exactly onto the token grid. The encoder tokens are
projected, spliced into a prompt in place of its one ``<image>`` token and run through the LLM's
decoder (not its LM head). Forward hooks read, per image:

* layer 0: the projector output (the visual tokens as they enter the LLM);
* layer L >= 1: the output of decoder block L at the visual positions (the residual stream, before
  the final norm; transformers' ``hidden_states[L]`` except for the last block, which transformers
  reports after the norm);
* attention balance of block L: the attention mass each text position after the image puts on the
  image positions, averaged over heads and those text positions (eager attention is switched on
  for the pass, as SDPA/flash kernels do not return weights).

On LLaVA-NeXT/OneVision (tiled input) the letterboxed square goes through the checkpoint's own tiling, so
the LLM sees what it sees in evaluation (base view, tiles, row-end tokens); the states are read at the
base view's positions (the first grid-size tokens of the image span, the whole square at the tower's
resolution, whose geometry is the C score's) and the attention balance over all image positions.

The forward stops after the deepest requested block. Visual states do not depend on the text after
the image (causal attention), so cycling through several prompts only changes the attention part.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from lmms_ac.scores.correspondence import Letterbox, PatchGrid, l2_concat
from lmms_ac.vision.base import to_rgb

# neutral prompts: the image is the subject, nothing task-specific is asked
NEUTRAL_PROMPTS = (
    "Describe the image.",
    "What is in this picture?",
    "Look at the image.",
    "Write a short caption for this photo.",
)
PAD_MODES = ("zero", "mean")


class _StopForward(Exception):
    """Raised by the last needed hook: the deeper blocks are not computed."""


@dataclass
class ImageLayers:
    """One image: the encoder's tokens ``[N, D_vis]``, visual states ``{layer: [N, D_llm]}`` and the
    attention share on image positions ``{block: share}`` (empty when attention is off)."""

    encoder: torch.Tensor
    states: Dict[int, torch.Tensor]
    attention: Dict[int, float] = field(default_factory=dict)
    uniform_share: float = float("nan")  # the share a uniform (causal) attention would give


def parse_layers(spec: Optional[str], n_layers: int) -> List[int]:
    """``"all"``/None -> 0..n; ``"0,4,-1"`` (negative counts from the last block); ``"0-8"`` ranges."""
    if spec is None or str(spec).strip().lower() in ("", "all"):
        return list(range(n_layers + 1))
    out = set()
    for item in str(spec).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            if "-" in item[1:]:
                a, b = item[0] + item[1:].split("-", 1)[0], item[1:].split("-", 1)[1]
                lo, hi = int(a), int(b)
                if lo > hi:
                    raise ValueError
                values = list(range(lo, hi + 1))
            else:
                values = [int(item)]
        except ValueError:
            raise ValueError(f"--layers: cannot read {item!r}; use e.g. '0,8,16,-1', '0-12' or 'all'") from None
        for v in values:
            v = n_layers + 1 + v if v < 0 else v
            if not 0 <= v <= n_layers:
                raise ValueError(
                    f"--layers: layer {item} is outside 0..{n_layers} (0 = projector output, "
                    f"{n_layers} = last of the LLM's {n_layers} blocks)"
                )
            out.add(v)
    if not out:
        raise ValueError("--layers selects no layer")
    return sorted(out)


def decoder_blocks(llm: torch.nn.Module) -> torch.nn.ModuleList:
    from lmms_ac.vlm.model import decoder_layers

    return decoder_layers(llm)


@contextlib.contextmanager
def eager_attention(llm: torch.nn.Module) -> Iterator[None]:
    """Run ``llm`` with eager attention (which returns its weights) and restore its setting after."""
    previous = getattr(llm.config, "_attn_implementation", None)
    if previous == "eager":
        yield
        return
    llm.set_attn_implementation("eager")
    try:
        yield
    finally:
        if previous is not None:
            llm.set_attn_implementation(previous)


def encoder_features(vision: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """L2-normalised encoder tokens as the C score uses them (a concat is normalised part-wise)."""
    parts = vision.split(tokens) if hasattr(vision, "split") and hasattr(vision, "parts") else [tokens]
    return l2_concat(parts)


class LayerExtractor:
    """Loads (letterboxes) images and runs batches of them through ``vlm`` with hooks."""

    def __init__(
        self,
        vlm,
        layers: Sequence[int],
        *,
        prompts: Sequence[str] = NEUTRAL_PROMPTS,
        prompt_format: str = "auto",
        system_prompt: Optional[str] = None,
        pad: str = "zero",
        attention: bool = True,
    ):
        from lmms_ac.vlm.prompts import IMAGE_TOKEN, build_prompt, resolve_format

        if pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {', '.join(PAD_MODES)}, got {pad!r}")
        if not prompts:
            raise ValueError("no prompt given; pass at least one prompt text")
        # LLaVA-NeXT/OneVision: the letterboxed square goes through the checkpoint's own tiling, the LLM sees base
        # view + tiles + row ends, and the probes read the base view's positions (the first grid-size tokens)
        self.tiled = getattr(vlm, "image_aspect_ratio", None) == "anyres"
        self.vlm = vlm
        self.blocks = decoder_blocks(vlm.llm)
        self.n_layers = len(self.blocks)
        self.layers = sorted(set(int(x) for x in layers))
        bad = [x for x in self.layers if not 0 <= x <= self.n_layers]
        if bad:
            raise ValueError(f"layers {bad} outside 0..{self.n_layers}")
        self.attention = attention
        self.attn_layers = [x for x in self.layers if x >= 1] if attention else []
        self.pad = pad
        vision = vlm.vision
        self.size = int(vision.image_spec.size)
        rows, cols = (int(v) for v in vision.grid)
        self.grid = PatchGrid(rows, cols, self.size, int(vision.covered_size))
        fmt = resolve_format(prompt_format, vlm.tokenizer)
        self.prompts = [build_prompt(p, 1, fmt, vlm.tokenizer, system_prompt) for p in prompts]
        self.prompt_ids: List[List[int]] = []
        for text in self.prompts:
            ids = vlm.tokenize(
                text
            )  # the checkpoint format's own tokenization (chunked around <image> for original LLaVA)
            if ids.count(vlm.image_token_id) != 1:
                raise ValueError(f"prompt {text!r} must hold exactly one {IMAGE_TOKEN!r} token after tokenization")
            self.prompt_ids.append(ids)
        self.images_encoded = 0
        self.forwards = 0

    # ------------------------------------------------------------------ images
    def load(self, path: Path) -> Tuple[torch.Tensor, Letterbox]:
        """Decode and letterbox one image: ``[3, S, S]`` pixels in [0, 1] and the transform."""
        with Image.open(path) as im:
            image = to_rgb(im)
            image.load()
        box = Letterbox.fit(image.size[0], image.size[1], self.size)
        pixels = box.apply(image)
        if self.pad == "mean":
            mean = torch.tensor(self.vlm.vision.image_spec.mean, dtype=pixels.dtype).view(3, 1, 1)
            inside = torch.zeros(self.size, self.size, dtype=torch.bool)
            inside[box.pad_y : box.pad_y + box.new_height, box.pad_x : box.pad_x + box.new_width] = True
            pixels = torch.where(inside, pixels, mean)
        return pixels, box

    # ------------------------------------------------------------------ forward
    def _sequences(self, visual: torch.Tensor, first_index: int):
        vlm = self.vlm
        embed = vlm.llm.get_input_embeddings()
        seqs, spans = [], []
        for b in range(visual.shape[0]):
            ids = self.prompt_ids[(first_index + b) % len(self.prompt_ids)]
            pos = ids.index(vlm.image_token_id)
            ids_t = torch.tensor(ids, device=vlm.device)
            text = embed(ids_t.masked_fill(ids_t == vlm.image_token_id, vlm.pad_token_id))
            seqs.append(torch.cat([text[:pos], visual[b].to(text.dtype), text[pos + 1 :]]))
            spans.append((pos, pos + visual.shape[1]))
        longest = max(len(s) for s in seqs)
        pad = embed(torch.tensor([vlm.pad_token_id], device=vlm.device))[0]
        embeds = pad.expand(len(seqs), longest, pad.shape[-1]).clone()
        mask = torch.zeros(len(seqs), longest, dtype=torch.long, device=vlm.device)
        for b, s in enumerate(seqs):  # right padding: positions of the prompt are the same for every sample
            embeds[b, : len(s)] = s
            mask[b, : len(s)] = 1
        return embeds, mask, spans, [len(s) for s in seqs]

    @torch.inference_mode()
    def extract(self, pixels: Sequence[torch.Tensor], first_index: int = 0) -> List[ImageLayers]:
        """Run a batch of letterboxed images; ``first_index`` (the running image count) picks the
        prompt of each image from the cycle."""
        vlm = self.vlm
        vision = vlm.vision
        px = torch.stack(list(pixels)).to(device=vision.device, dtype=vision.dtype)
        enc = vision.encode(vision.normalize(px))
        if enc.ndim != 3 or enc.shape[1] != self.grid.rows * self.grid.cols:
            raise RuntimeError(
                f"{vision.spec}: expected tokens [B, {self.grid.rows * self.grid.cols}, D], got {tuple(enc.shape)}"
            )
        n_grid = self.grid.rows * self.grid.cols
        visual = self._tiled_tokens(px) if self.tiled else vlm.projector(enc.to(device=vlm.device, dtype=vlm.dtype))
        self.images_encoded += len(px)
        states: Dict[int, torch.Tensor] = {}
        if 0 in self.layers:
            states[0] = visual[:, :n_grid]
        deep = [x for x in self.layers if x >= 1]
        attention: Dict[int, List[float]] = {}
        uniform: List[float] = []
        if deep or self.attn_layers:
            embeds, mask, spans, lengths = self._sequences(visual, first_index)
            uniform = [_uniform_share(s, e, n) for (s, e), n in zip(spans, lengths)]
            self._forward(embeds, mask, spans, lengths, deep, states, attention)
        out = []
        for b in range(len(px)):
            out.append(
                ImageLayers(
                    encoder=enc[b],
                    states={k: v[b] for k, v in states.items()},
                    attention={k: v[b] for k, v in attention.items()},
                    uniform_share=uniform[b] if uniform else float("nan"),
                )
            )
        return out

    def _tiled_tokens(self, px: torch.Tensor) -> torch.Tensor:
        """``[B, N_tiled, D_llm]``: each letterboxed square (8-bit RGB again, as an image file would be) through the
        checkpoint's tiling; every square has the same size, so the same tiles and token count."""
        images = [
            Image.fromarray((p.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())
            for p in px
        ]
        tokens = self.vlm.encode_images(images)
        if len({len(t) for t in tokens}) != 1:
            raise RuntimeError(f"tiled squares gave different token counts {[len(t) for t in tokens]}")
        return torch.stack(tokens)

    def _forward(
        self,
        embeds,
        mask,
        spans,
        lengths,
        deep: List[int],
        states: Dict[int, torch.Tensor],
        attention: Dict[int, List[float]],
    ) -> None:
        attn_layers = self.attn_layers
        n_grid = self.grid.rows * self.grid.cols
        last = max(deep + attn_layers)
        handles = []

        def block_hook(layer: int):
            def hook(module, args, output):
                hidden = output[0] if isinstance(output, tuple) else output
                if layer in deep:  # the grid's positions (on tiled input: the base view, first in the image span)
                    states[layer] = torch.stack([hidden[b, s : s + n_grid] for b, (s, _) in enumerate(spans)]).clone()
                if layer == last:
                    raise _StopForward

            return hook

        def attn_hook(layer: int):
            def hook(module, args, output):
                weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
                if weights is None:
                    raise RuntimeError(
                        f"block {layer}'s attention returned no weights; eager attention is required "
                        "(pass --no-attention to skip attention balance)"
                    )
                shares = []
                for b, (s, e) in enumerate(spans):
                    w = weights[b, :, e : lengths[b], :].float()  # [H, text positions after the image, T]
                    shares.append(float(w[..., s:e].sum(-1).mean()) if w.shape[1] else float("nan"))
                attention[layer] = shares

            return hook

        for layer in sorted(set(deep + attn_layers)):
            block = self.blocks[layer - 1]
            handles.append(block.register_forward_hook(block_hook(layer)))
            if layer in attn_layers:
                attn = getattr(block, "self_attn", None) or getattr(block, "attn", None)
                if attn is None:
                    raise ValueError(f"cannot find the attention module of {type(block).__name__}; pass --no-attention")
                handles.append(attn.register_forward_hook(attn_hook(layer)))
        llm = self.vlm.llm
        base = getattr(llm, getattr(llm, "base_model_prefix", "model"), llm)
        ctx = eager_attention(llm) if attn_layers else contextlib.nullcontext()
        try:
            with ctx:
                base(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        self.forwards += 1


def _uniform_share(start: int, end: int, length: int) -> float:
    """Share on image positions of a uniform causal attention, averaged over the text after the image:
    position t sees t + 1 positions, ``end - start`` of them visual."""
    ts = np.arange(end, length)
    return float(np.mean((end - start) / (ts + 1))) if len(ts) else float("nan")
