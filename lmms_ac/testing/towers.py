"""Tiny random vision towers saved as local directories, in the layouts of their hub repositories."""
from __future__ import annotations

import torch


def make_clip_tower(directory: str, image_size: int = 32, patch_size: int = 8, hidden_size: int = 32, seed: int = 0) -> str:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=3, num_attention_heads=4,
                           image_size=image_size, patch_size=patch_size)
    CLIPVisionModel(cfg).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return directory


def make_siglip_tower(directory: str, image_size: int = 32, patch_size: int = 8, hidden_size: int = 48, seed: int = 0) -> str:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    cfg = SiglipVisionConfig(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=3, num_attention_heads=4,
                             image_size=image_size, patch_size=patch_size)
    SiglipVisionModel(cfg).save_pretrained(directory)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(directory)
    return directory
