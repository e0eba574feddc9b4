"""Projectors from vision tokens to LLM embeddings, named as in the original LLaVA code.

``linear`` and ``mlp{N}x_gelu`` (LLaVA-1.5 uses ``mlp2x_gelu``): an ``nn.Sequential`` whose
parameter names (``0.weight``, ``2.weight``...) match original ``model.mm_projector.*`` keys.
"""

from __future__ import annotations

import re
from typing import Dict

import torch
from torch import nn

_MLP = re.compile(r"^mlp(\d+)x_gelu$")


def build_projector(kind: str, vision_dim: int, llm_dim: int, bias: bool = True) -> nn.Module:
    if kind == "linear":
        return nn.Sequential(nn.Linear(vision_dim, llm_dim, bias=bias))
    match = _MLP.match(kind)
    if not match:
        raise ValueError(f"unknown projector type {kind!r}; supported: 'linear', 'mlp2x_gelu' (any 'mlp{{N}}x_gelu')")
    layers = [nn.Linear(vision_dim, llm_dim, bias=bias)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(llm_dim, llm_dim, bias=bias)]
    return nn.Sequential(*layers)


def projector_from_llava_hf(module: nn.Module) -> nn.Module:
    """Re-express transformers' ``LlavaMultiModalProjector`` (linear_1, act, linear_2) as
    ``mlp2x_gelu`` sharing the same parameters (no copy)."""
    act = module.act
    if not isinstance(act, nn.GELU) and type(act).__name__ not in ("GELUActivation",):
        raise ValueError(
            f"llava-hf projector uses activation {type(act).__name__}; only GELU (mlp2x_gelu) is supported"
        )
    return nn.Sequential(module.linear_1, nn.GELU(), module.linear_2)


def strip_projector_prefix(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``model.mm_projector.0.weight`` -> ``0.weight`` (keeps only projector keys)."""
    out = {}
    for key, value in state.items():
        if "mm_projector." in key:
            out[key.split("mm_projector.", 1)[1]] = value
    return out
