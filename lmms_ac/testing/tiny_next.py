"""A tiny llava-hf LLaVA-NeXT checkpoint in the hub's layout (random weights, real file and field names).

``build_llava_next_hf(directory)`` writes what ``llava-hf/llava-v1.6-vicuna-7b-hf`` holds, with tiny
sizes: ``config.json`` as transformers 4.39 wrote it for ``model_type: llava_next`` (``image_grid_pinpoints``,
``use_image_newline_parameter``, ``vision_feature_select_strategy``), ``model-0000N-of-00002.safetensors``
+ ``model.safetensors.index.json`` with that version's key names (``language_model.model.*``,
``vision_tower.*``, ``multi_modal_projector.*``, ``image_newline``), ``preprocessor_config.json``
(``LlavaNextImageProcessor``), ``processor_config.json``, ``chat_template.json``, ``generation_config.json``
and the Vicuna SentencePiece tokenizer files. The tower is a 32 px CLIP with 8 px patches (a 4 x 4
grid per view) and the pinpoints are the released ones scaled by 32/336, so images of different
aspect ratios get 2 or 3 tiles plus the base view, as 336 px images do at full size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import torch

from lmms_ac.testing.released import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_SIZE,
    LLAVA_HF_TEMPLATE,
    PATCH_SIZE,
    TEXT,
    VISION_DIM,
    hub_state_dict,
    write_json,
    write_sentencepiece_tokenizer,
    write_sharded,
)

# the released pinpoints ([[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]) at IMAGE_SIZE
PINPOINTS = [[IMAGE_SIZE * h, IMAGE_SIZE * w] for h, w in ([1, 2], [2, 1], [2, 2], [3, 1], [1, 3])]
TRANSFORMERS_VERSION = "4.39.0.dev0"


def next_preprocessor(pinpoints: Optional[List[List[int]]] = None) -> dict:
    """``preprocessor_config.json`` of llava-hf's NeXT checkpoints, tiny sizes."""
    return {
        "aspect_ratio_setting": "anyres",
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_grid_pinpoints": pinpoints or PINPOINTS,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "LlavaNextImageProcessor",
        "image_std": CLIP_STD,
        "processor_class": "LlavaNextProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": IMAGE_SIZE},
    }


def build_llava_next_hf(directory: str, seed: int = 0, pinpoints: Optional[List[List[int]]] = None) -> Dict[str, str]:
    """Write the tiny NeXT checkpoint to ``directory``; returns ``{"checkpoint": directory}``. ``pinpoints``
    (``[height, width]`` pairs) replaces the released list, scaled (``PINPOINTS``)."""
    pinpoints = [list(p) for p in (pinpoints or PINPOINTS)]
    from transformers import AutoTokenizer, LlavaNextConfig, LlavaNextForConditionalGeneration

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    sp_dir = out / ".sp"
    vocab = write_sentencepiece_tokenizer(sp_dir, model_max_length=4096)
    tokenizer = AutoTokenizer.from_pretrained(str(sp_dir))
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.padding_side = "left"
    image_id, pad_id, full_vocab = vocab, vocab + 1, vocab + 2
    tokenizer.save_pretrained(str(out))
    (out / "tokenizer.model").write_bytes((sp_dir / "tokenizer.model").read_bytes())
    for f in sp_dir.iterdir():
        f.unlink()
    sp_dir.rmdir()
    text = {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "max_position_embeddings": 4096, "pad_token_id": 0, "rms_norm_eps": 1e-05, "torch_dtype": "float16",
            "vocab_size": full_vocab, "num_key_value_heads": TEXT["num_attention_heads"], **TEXT}  # fmt: skip
    vision = {"hidden_size": VISION_DIM, "image_size": IMAGE_SIZE, "intermediate_size": 64,
              "model_type": "clip_vision_model", "num_attention_heads": 4, "num_hidden_layers": 3,
              "patch_size": PATCH_SIZE, "projection_dim": 32, "vocab_size": 32000}  # fmt: skip
    config = {"architectures": ["LlavaNextForConditionalGeneration"], "ignore_index": -100,
              "image_grid_pinpoints": pinpoints, "image_token_index": image_id, "model_type": "llava_next",
              "pad_token_id": pad_id, "projector_hidden_act": "gelu", "text_config": text,
              "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": TRANSFORMERS_VERSION,
              "use_image_newline_parameter": True, "vision_config": vision, "vision_feature_layer": -2,
              "vision_feature_select_strategy": "default", "vocab_size": full_vocab}  # fmt: skip
    torch.manual_seed(seed)
    cfg = {k: v for k, v in config.items() if k not in ("transformers_version", "use_image_newline_parameter")}
    model = LlavaNextForConditionalGeneration(LlavaNextConfig.from_dict(cfg))
    state = hub_state_dict(model)  # the 4.39 names on the hub, float16
    write_json(out / "config.json", config)
    write_sharded(out, state, safetensors=True)
    write_json(out / "generation_config.json",
                {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                 "transformers_version": TRANSFORMERS_VERSION})  # fmt: skip
    write_json(out / "preprocessor_config.json", next_preprocessor(pinpoints))
    write_json(out / "processor_config.json",
                {"image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": PATCH_SIZE,
                 "processor_class": "LlavaNextProcessor", "vision_feature_select_strategy": "default"})  # fmt: skip
    write_json(out / "chat_template.json", {"chat_template": LLAVA_HF_TEMPLATE})
    return {"checkpoint": str(out)}
