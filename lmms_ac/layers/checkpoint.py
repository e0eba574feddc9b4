"""The trained MLLM a layer probe reads: where it is, how to load it, and what its config says before
loading (so a run whose scores are all stored loads nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple


@dataclass(frozen=True)
class CheckpointSettings:
    """A checkpoint as ``lmms_ac_llava`` loads it (llava-hf or original LLaVA; directory or hub id)."""

    model: str
    model_base: Optional[str] = None  # base LLM of a stage-1 checkpoint (only mm_projector.bin)
    vision_tower: Optional[str] = None  # overrides the checkpoint's vision tower spec
    device: Optional[str] = None  # default: cuda when available
    dtype: str = "auto"


def default_variant(model: str) -> str:
    """The row name of a checkpoint: its directory name."""
    return str(model).rstrip("/").split("/")[-1]


def load_model(checkpoint: CheckpointSettings) -> Any:
    """The ``LlavaStyleVLM`` of the checkpoint on its device."""
    import torch

    from lmms_ac.vlm.loaders import load_vlm

    device = checkpoint.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_vlm(
        checkpoint.model,
        model_base=checkpoint.model_base,
        vision_tower=checkpoint.vision_tower,
        dtype=checkpoint.dtype,
        device=device,
    )


def checkpoint_summary(model: str, vision_tower: Optional[str]) -> Tuple[Optional[str], Optional[int]]:
    """(vision label of the score rows, number of LLM blocks) from the checkpoint's config alone, or
    (None, None) when the config does not say (then the model is loaded to find out)."""
    from lmms_ac.vlm.loaders import checkpoint_format, read_config

    try:
        config = read_config(model)
        fmt = checkpoint_format(config)
    except ValueError:
        return None, None  # load_vlm raises the full explanation
    if fmt == "llava_hf":
        blocks = (config.get("text_config") or {}).get("num_hidden_layers")
        label = vision_tower or f"llava-hf:{model}"
    else:
        blocks = config.get("num_hidden_layers")
        label = vision_tower or config.get("mm_vision_tower") or config.get("vision_tower")
    return (str(label), int(blocks)) if label and blocks else (None, None)


def vision_label(vlm: Any) -> str:
    """The vision label of a loaded model's score rows: its tower's spec, else the tower's class name."""
    return str(getattr(vlm.vision, "spec", type(vlm.vision).__name__))
