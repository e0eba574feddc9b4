"""A tiny LLaVA-NeXT checkpoint in the original release's layout (``liuhaotian/llava-v1.6-vicuna-7b``).

``build_llava_next_original(directory, seed)`` writes what that repository holds, with tiny sizes and
random weights: ``config.json`` as LLaVA's code wrote it under transformers 4.36 (``model_type: llava``,
``LlavaLlamaForCausalLM``, ``image_aspect_ratio: anyres``, ``image_grid_pinpoints`` as ``[width, height]``
pairs, ``mm_patch_merge_type: spatial_unpad``, ``unfreeze_mm_vision_tower: true``, ``mm_vision_tower:
openai/clip-vit-large-patch14-336``), ``model-0000N-of-00002.safetensors`` + index with the original key
names (``model.layers.*``, ``lm_head.weight``, ``model.mm_projector.{0,2}.*``, ``model.image_newline``, the
fine-tuned tower as ``model.vision_tower.vision_tower.vision_model.*``), the Vicuna SentencePiece
tokenizer (``tokenizer.model``, no ``<image>`` token) and ``generation_config.json``. One departure: the
release stores bfloat16, this fixture float16, so it holds exactly the weights of its llava-hf twin.

``onevision_twin_of`` does the same for LLaVA-OneVision (``lmms-lab/llava-onevision-qwen2-7b-ov``:
``LlavaQwenForCausalLM``, ``anyres_max_9``, the pinpoints as the ``"(1x1),...,(6x6)"`` range, SigLIP tower id
resolved by ``build_siglip_cache`` with one layer more than the checkpoint saved, as the original code cuts it).

``twin_of(hf_dir, directory)`` writes the same weights from a tiny llava-hf NeXT checkpoint
(``lmms_ac.testing.tiny_next``) under the original names, as transformers'
``convert_llava_next_weights_to_hf`` maps them the other way; ``<image>``/``<pad>`` rows, which llava-hf
added, are dropped. The tower id resolves through ``lmms_ac.testing.released.build_hf_cache`` (a tower with
other weights than the checkpoint's, so a loader that took the hub's tower would be caught).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import torch

from lmms_ac.testing.released import (
    TOWER_ID,
    hub_snapshot,
    VISION_DIM,
    llama_config_fields,
    write_json,
    write_sentencepiece_tokenizer,
    write_sharded,
)
from lmms_ac.testing.tiny_next import PINPOINTS, build_llava_next_hf

TRANSFORMERS_VERSION = "4.36.2"


def original_pinpoints(hf_pinpoints: List[List[int]]) -> List[List[int]]:
    """transformers' ``[height, width]`` pairs written as LLaVA-NeXT reads them, ``[width, height]``."""
    return [[w, h] for h, w in hf_pinpoints]


def original_key(hub_key: str) -> str:
    """A llava-hf hub name (transformers 4.3x) -> the original LLaVA-NeXT name."""
    for old, new in (
        ("language_model.model.", "model."),
        ("language_model.lm_head.", "lm_head."),
        ("vision_tower.", "model.vision_tower.vision_tower."),
        ("multi_modal_projector.linear_1.", "model.mm_projector.0."),
        ("multi_modal_projector.linear_2.", "model.mm_projector.2."),
        ("image_newline", "model.image_newline"),
    ):
        if hub_key.startswith(old):
            return new + hub_key[len(old) :]
    raise KeyError(f"no original name for {hub_key!r}")


def original_state(hf_dir: Path) -> Dict[str, torch.Tensor]:
    """The tensors of a llava-hf checkpoint's safetensors shards under their original names."""
    from safetensors.torch import load_file

    state: Dict[str, torch.Tensor] = {}
    for shard in sorted(Path(hf_dir).glob("*.safetensors")):
        state.update({original_key(k): v for k, v in load_file(str(shard)).items()})
    return state


def next_original_config(vocab_size: int, pinpoints: List[List[int]], text: dict) -> dict:
    """``config.json`` of ``liuhaotian/llava-v1.6-vicuna-7b`` (transformers 4.36.2), tiny sizes."""
    config = {
        "_name_or_path": "./checkpoints/vicuna-7b-v1-5",
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava",
        **llama_config_fields(vocab_size, "4.37"),
        **{k: text[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")},
        "freeze_mm_mlp_adapter": False,
        "freeze_mm_vision_resampler": False,
        "image_aspect_ratio": "anyres",
        "image_crop_resolution": 224,
        "image_grid_pinpoints": pinpoints,
        "image_split_resolution": 224,
        "mm_hidden_size": VISION_DIM,
        "mm_patch_merge_type": "spatial_unpad",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_resampler_type": None,
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": TOWER_ID,
        "mm_vision_tower_lr": 2e-06,
        "tokenizer_model_max_length": 4096,
        "tokenizer_padding_side": "right",
        "transformers_version": TRANSFORMERS_VERSION,
        "tune_mm_mlp_adapter": False,
        "tune_mm_vision_resampler": False,
        "unfreeze_mm_vision_tower": True,
        "use_mm_proj": True,
    }
    return dict(sorted(config.items()))


def twin_of(hf_dir: str, directory: str) -> Dict[str, str]:
    """The weights of the llava-hf NeXT checkpoint ``hf_dir`` in the original layout at ``directory``."""

    hf = Path(hf_dir)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    hf_config = json.loads((hf / "config.json").read_text())
    vocab = write_sentencepiece_tokenizer(out, model_max_length=4096)
    (out / "tokenizer.model").write_bytes((hf / "tokenizer.model").read_bytes())  # the twin's own vocabulary
    state = original_state(hf)
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        state[key] = state[key][:vocab].contiguous()  # without llava-hf's added <image> and <pad> rows
    pinpoints = original_pinpoints(hf_config["image_grid_pinpoints"])
    write_json(out / "config.json", next_original_config(vocab, pinpoints, hf_config["text_config"]))
    write_sharded(out, state, safetensors=True)
    write_json(out / "generation_config.json",
               {"bos_token_id": 1, "eos_token_id": 2, "max_length": 4096, "pad_token_id": 0,
                "transformers_version": TRANSFORMERS_VERSION})  # fmt: skip
    return {"checkpoint": str(out)}


def build_llava_next_original(directory: str, seed: int = 0) -> Dict[str, str]:
    """The tiny original-layout NeXT checkpoint, with the released pinpoint list as written in its config
    (``[[336, 672], ...]`` scaled, read as ``[width, height]``); its llava-hf twin is built beside it and removed."""
    import shutil

    scratch = Path(directory).parent / (Path(directory).name + ".hf-twin")
    build_llava_next_hf(str(scratch), seed=seed, pinpoints=original_pinpoints(PINPOINTS))
    try:
        return twin_of(str(scratch), directory)
    finally:
        shutil.rmtree(scratch)


# ------------------------------------------------------------------------------------------ LLaVA-OneVision
SIGLIP_ID = "google/siglip-so400m-patch14-384"
SIGLIP_COMMIT = "9fdffc58afc957d1a03a25b10dba0329ab15c2a3"  # a 40-hex snapshot name, as the hub cache has
QWEN2_TEMPLATE = (  # Qwen2-Instruct's tokenizer_config.json chat template (a default system turn)
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_siglip_cache(hf_home: str, layers: int, seed: int = 0) -> Path:
    """``google/siglip-so400m-patch14-384`` (tiny: 32 px, 8 px patches, ``layers`` vision layers, random) in
    ``<hf_home>/hub`` as the hub cache lays it out: a full ``SiglipModel`` with its ``SiglipImageProcessor``."""
    from transformers import SiglipConfig, SiglipModel

    from lmms_ac.testing.tiny_onevision import PATCH, SIZE
    from lmms_ac.testing.tiny_onevision import VISION_DIM as SIGLIP_DIM

    snap = hub_snapshot(hf_home, SIGLIP_ID, SIGLIP_COMMIT)
    torch.manual_seed(seed + 11)
    config = SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         vocab_size=99, max_position_embeddings=16),
        vision_config=dict(hidden_size=SIGLIP_DIM, intermediate_size=64, num_hidden_layers=layers,
                           num_attention_heads=4, image_size=SIZE, patch_size=PATCH),
    )  # fmt: skip
    model = SiglipModel(config)
    fields = model.config.to_dict()
    fields.update(architectures=["SiglipModel"], transformers_version="4.37.0.dev0")
    write_json(snap / "config.json", fields)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snap / "model.safetensors"))
    write_json(snap / "preprocessor_config.json",
               {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
                "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5], "processor_class":
                "SiglipProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
                "size": {"height": SIZE, "width": SIZE}})  # fmt: skip
    return snap


def onevision_original_config(hf_config: dict, pinpoints) -> dict:
    """``config.json`` of ``lmms-lab/llava-onevision-qwen2-7b-ov`` (LLaVA-NeXT's code, transformers 4.40), tiny."""
    text = hf_config["text_config"]
    keep = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "max_position_embeddings", "max_window_layers", "rms_norm_eps", "rope_theta", "vocab_size",
            "bos_token_id", "eos_token_id")  # fmt: skip
    config = {
        "_name_or_path": "",
        "architectures": ["LlavaQwenForCausalLM"],
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "image_aspect_ratio": "anyres_max_9",
        "image_crop_resolution": None,
        "image_grid_pinpoints": pinpoints,
        "image_split_resolution": None,
        "initializer_range": 0.02,
        "mm_hidden_size": hf_config["vision_config"]["hidden_size"],
        "mm_newline_position": "grid",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_resampler_type": None,
        "mm_spatial_pool_mode": "bilinear",
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": SIGLIP_ID,
        "mm_vision_tower_lr": 2e-06,
        "model_type": "llava",
        "pos_skipping_range": 4096,
        "rope_scaling": None,
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "tokenizer_model_max_length": 32768,
        "tokenizer_padding_side": "right",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.0.dev0",
        "use_cache": True,
        "use_mm_proj": True,
        "use_pos_skipping": False,
        "use_sliding_window": False,
        "vision_tower_pretrained": None,
        **{k: text[k] for k in keep if k in text},
    }
    return dict(sorted(config.items()))


def onevision_twin_of(hf_dir: str, directory: str) -> Dict[str, str]:
    """The weights of the llava-hf OneVision checkpoint ``hf_dir`` in the original (LLaVA-NeXT repository) layout,
    with Qwen2's tokenizer files and chat template; the vocabulary is kept whole (Qwen2's embedding has spare
    rows too). The pinpoint list is written as the ``"(1x1),...,(6x6)"`` range the training scripts pass."""
    import shutil

    hf = Path(hf_dir)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    hf_config = json.loads((hf / "config.json").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(hf / name, out / name)
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    write_json(out / "tokenizer_config.json", {**tok_config, "chat_template": QWEN2_TEMPLATE})
    state = original_state(hf)
    side = hf_config["vision_config"]["image_size"]
    counts = sorted({(h // side, w // side) for h, w in hf_config["image_grid_pinpoints"]})
    (a0, b0), (a1, b1) = counts[0], counts[-1]
    write_json(out / "config.json", onevision_original_config(hf_config, f"({a0}x{b0}),...,({a1}x{b1})"))
    write_sharded(out, state, safetensors=True)
    text = hf_config["text_config"]
    write_json(out / "generation_config.json",
               {"bos_token_id": text.get("bos_token_id"), "eos_token_id": text["eos_token_id"],
                "transformers_version": "4.40.0.dev0"})  # fmt: skip
    return {"checkpoint": str(out)}
