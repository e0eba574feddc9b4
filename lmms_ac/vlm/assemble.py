"""Pieces every llava-hf loader assembles the same way: the causal LM around loaded modules, and the
check that the vision tower's width fits the projector."""

from __future__ import annotations

from typing import Any

import torch

from lmms_ac.vlm.errors import CheckpointError


def causal_lm_around(text_config: Any, base_model: torch.nn.Module, lm_head: torch.nn.Module) -> torch.nn.Module:
    """A ``*ForCausalLM`` that reuses already-loaded decoder and head modules (no weight copy)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(text_config)
    setattr(lm, lm.base_model_prefix, base_model)
    lm.lm_head = lm_head
    leftover = [n for n, p in lm.named_parameters() if p.is_meta]
    if leftover:
        raise RuntimeError(f"causal LM assembly left parameters unset: {leftover[:5]}")
    return lm


def check_fit(vision: Any, projector: torch.nn.Module, pretrained: str) -> None:
    """The projector's first linear layer takes the tower's token width, or a ``CheckpointError``."""
    first = next(m for m in projector.modules() if isinstance(m, torch.nn.Linear))
    if first.in_features != vision.hidden_size:
        raise CheckpointError(
            f"{pretrained}: vision tower {vision.spec} gives {vision.hidden_size}-dim tokens but the projector expects "
            f"{first.in_features}; pick a vision_tower= that matches the checkpoint"
        )
