"""Tiny in-memory VLMs with planted layer behaviour, for ``lmms_ac.layers`` tests and the demo.

* ``identity_llm=True`` zeroes every block's ``o_proj`` and ``down_proj``: each block adds nothing
  to the residual stream, so every layer's visual states equal the projector output;
* ``projector="orthogonal"`` maps encoder tokens by a matrix with orthonormal columns (cosines, so
  the C score, are preserved exactly); ``"random"`` is an ordinary random MLP; ``"destroy"`` keeps
  only the image's mean token plus tiny seeded per-token noise (no spatial information left);
* ``zero_qk=True`` zeroes ``q_proj``/``k_proj``: attention is uniform over the visible positions.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class SpatialDestroyer(nn.Module):
    """Replace every token by the image's mean token (+ seeded noise of scale ``eps``), then project."""

    def __init__(self, d_in: int, d_out: int, eps: float = 1e-3, seed: int = 0):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.eps = eps
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mean = tokens.mean(dim=1, keepdim=True).expand_as(tokens)
        noise = torch.randn(tokens.shape, generator=self.generator).to(tokens) * self.eps * tokens.abs().mean()
        return self.linear(mean + noise)


def orthogonal_projector(d_in: int, d_out: int, seed: int = 0) -> nn.Module:
    if d_out < d_in:
        raise ValueError(f"an orthogonal projector needs d_out >= d_in, got {d_in} -> {d_out}")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d_out, d_out, generator=g))
    layer = nn.Linear(d_in, d_out, bias=False)
    with torch.no_grad():
        layer.weight.copy_(q[:, :d_in])
    return nn.Sequential(layer)


def tiny_layer_vlm(
    *,
    vision: Optional[nn.Module] = None,
    projector: str = "orthogonal",
    identity_llm: bool = False,
    zero_qk: bool = False,
    n_layers: int = 2,
    d_llm: int = 320,
    attn_implementation: str = "sdpa",
    seed: int = 0,
):
    """A ``LlavaStyleVLM`` on CPU in float32: ``vision`` (default a 128-px ``PixelPatchEncoder``,
    16x16 tokens), the chosen projector and a random tiny Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmms_ac.testing.spair import PixelPatchEncoder
    from lmms_ac.testing.tiny import make_tokenizer
    from lmms_ac.vlm.model import LlavaStyleVLM
    from lmms_ac.vlm.projector import build_projector

    torch.manual_seed(seed)
    vision = vision if vision is not None else PixelPatchEncoder(size=128, patch=8)
    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=d_llm,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    config._attn_implementation = attn_implementation
    llm = LlamaForCausalLM(config).eval()
    for block in llm.model.layers:
        with torch.no_grad():
            if identity_llm:
                block.self_attn.o_proj.weight.zero_()
                block.mlp.down_proj.weight.zero_()
            if zero_qk:
                block.self_attn.q_proj.weight.zero_()
                block.self_attn.k_proj.weight.zero_()
    d_vis = int(vision.hidden_size)
    if projector == "orthogonal":
        proj = orthogonal_projector(d_vis, d_llm, seed)
    elif projector == "random":
        proj = build_projector("mlp2x_gelu", d_vis, d_llm)
    elif projector == "destroy":
        proj = SpatialDestroyer(d_vis, d_llm, seed=seed)
    else:
        raise ValueError(f"projector must be orthogonal, random or destroy, got {projector!r}")
    vlm = LlavaStyleVLM(vision, proj, llm, tokenizer, image_aspect_ratio="pad")
    return vlm.eval().requires_grad_(False)


def make_tiny_clip(directory: str, seed: int = 0) -> str:
    """A tiny random CLIP dual encoder (model, tokenizer, image processor) for encoder zero-shot."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from lmms_ac.testing.tiny import make_tokenizer

    tok = make_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=3,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return str(directory)


COLOUR_CLASSES = {"cat": (200, 120, 40), "dog": (60, 60, 60), "red_car": (220, 20, 20)}


def write_classification_folder(directory: str, per_class: int = 3, seed: int = 0) -> str:
    """An image folder (one sub-folder per class) of noisy colour patches: the layout ``zeroshot-tasks`` reads."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    root = Path(directory)
    rng = np.random.default_rng(seed)
    for name, colour in COLOUR_CLASSES.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.clip(np.array(colour) + rng.normal(0, 25, (40, 48, 3)), 0, 255).astype("uint8")
            Image.fromarray(arr).save(root / name / f"{name}{i}.png")
    return str(root)
