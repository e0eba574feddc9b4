"""A tiny llava-hf LLaVA-OneVision checkpoint in the hub's layout (random weights, real file and field names).

``build_llava_onevision_hf(directory)`` writes what ``llava-hf/llava-onevision-qwen2-7b-ov-hf``
holds, with tiny sizes: ``config.json`` as transformers 4.45 wrote it (``model_type: llava_onevision``,
a SigLIP ``vision_config`` without head, a Qwen2 ``text_config``, ``vision_feature_select_strategy:
full``, ``vision_feature_layer: -1``, ``vision_aspect_ratio: anyres_max_9`` and the 6 x 6 pinpoint
list), ``model-0000N-of-00002.safetensors`` + index with that version's key names,
``preprocessor_config.json`` (``LlavaOnevisionImageProcessor``), ``processor_config.json``,
``chat_template.json`` (Qwen2's ChatML with images first) and a byte-level BPE tokenizer with
Qwen2's ``<|im_start|>``/``<|im_end|>``. The tower is a 32 px SigLIP with 8 px patches (4 x 4 per
view); the pinpoints are the released ones scaled by 32/384, so an image above about 3 x 3 tiles
is pooled (``anyres_max_9``) as a large one is at full size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch

from lmms_ac.testing.released import hub_state_dict, write_json, write_sharded
from lmms_ac.testing.tiny import make_tokenizer

SIZE, PATCH, VISION_DIM = 32, 8, 32
PINPOINTS = [[SIZE * h, SIZE * w] for h in range(1, 7) for w in range(1, 7)]
TRANSFORMERS_VERSION = "4.45.0.dev0"
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_llava_onevision_hf(directory: str, seed: int = 0) -> Dict[str, str]:
    """Write the tiny OneVision checkpoint to ``directory``; returns ``{"checkpoint": directory}``."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(corpus=["<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<video>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(str(out))
    vocab = len(tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<video>", "<|im_end|>", "<pad>")}
    text = {"_name_or_path": "Qwen/Qwen2-7B-Instruct", "architectures": ["Qwen2ForCausalLM"], "bos_token_id": 1,
            "eos_token_id": ids["<|im_end|>"], "hidden_size": 64, "intermediate_size": 128,
            "max_position_embeddings": 4096, "max_window_layers": 2, "model_type": "qwen2", "num_attention_heads": 4,
            "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
            "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "use_sliding_window": False, "vocab_size": vocab}  # fmt: skip
    vision = {"hidden_size": VISION_DIM, "image_size": SIZE, "intermediate_size": 64,
              "model_type": "siglip_vision_model", "num_attention_heads": 4, "num_hidden_layers": 3,
              "patch_size": PATCH, "vision_use_head": False}  # fmt: skip
    config = {"architectures": ["LlavaOnevisionForConditionalGeneration"], "image_grid_pinpoints": PINPOINTS,
              "image_token_index": ids["<image>"], "model_type": "llava_onevision", "projector_hidden_act": "gelu",
              "text_config": text, "tie_word_embeddings": False, "torch_dtype": "float16",
              "transformers_version": TRANSFORMERS_VERSION, "use_image_newline_parameter": True,
              "video_token_index": ids["<video>"], "vision_aspect_ratio": "anyres_max_9", "vision_config": vision,
              "vision_feature_layer": -1, "vision_feature_select_strategy": "full"}  # fmt: skip
    torch.manual_seed(seed)
    cfg = {k: v for k, v in config.items() if k not in ("transformers_version", "use_image_newline_parameter")}
    model = LlavaOnevisionForConditionalGeneration(LlavaOnevisionConfig.from_dict(cfg))
    state = hub_state_dict(model)  # the 4.45 names on the hub, float16
    write_json(out / "config.json", config)
    write_sharded(out, state, safetensors=True)
    write_json(out / "generation_config.json",
                {"bos_token_id": 1, "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<pad>"],
                 "transformers_version": TRANSFORMERS_VERSION})  # fmt: skip
    write_json(out / "preprocessor_config.json",
                {"do_convert_rgb": True, "do_normalize": True, "do_pad": True, "do_rescale": True, "do_resize": True,
                 "image_grid_pinpoints": PINPOINTS, "image_mean": [0.5, 0.5, 0.5],
                 "image_processor_type": "LlavaOnevisionImageProcessor", "image_std": [0.5, 0.5, 0.5],
                 "processor_class": "LlavaOnevisionProcessor", "resample": 3,
                 "rescale_factor": 0.00392156862745098, "size": {"height": SIZE, "width": SIZE}})  # fmt: skip
    write_json(out / "processor_config.json",
                {"image_token": "<image>", "num_image_tokens": (SIZE // PATCH) ** 2,
                 "processor_class": "LlavaOnevisionProcessor", "video_token": "<video>",
                 "vision_aspect_ratio": "anyres_max_9", "vision_feature_select_strategy": "full"})  # fmt: skip
    write_json(out / "chat_template.json", {"chat_template": CHATML_TEMPLATE})
    return {"checkpoint": str(out)}
