"""Tiny checkpoints in the layouts LLaVA checkpoints were released in (random weights, real file and field names).

The files are written as LLaVA's training code under transformers 4.31-4.37 (and llava-hf's
conversion under 4.36) wrote them, field for field, with tiny sizes:

* ``a``: LLaVA-1.5 as released (``liuhaotian/llava-v1.5-7b``): ``model_type: llava`` +
  ``LlavaLlamaForCausalLM``, transformers-4.31 config (``torch_dtype``, ``rope_scaling: null``),
  sharded ``pytorch_model-0000N-of-00002.bin`` + ``pytorch_model.bin.index.json``, ``tokenizer.model``
  + ``tokenizer_config.json`` + ``special_tokens_map.json``, ``generation_config.json``, and
  ``mm_vision_tower: openai/clip-vit-large-patch14-336`` resolved from the Hugging Face cache;
* ``b``: the same written by LLaVA >= 1.2 (``model_type: llava_llama``, transformers 4.37, the law
  paper's checkpoints);
* ``c``: a stage-1 folder (``mm_projector.bin`` + ``config.json``) with a Vicuna-layout ``model_base``;
* ``d``: llava-hf as on the hub (``llava-hf/llava-1.5-7b-hf``): ``processor_config.json``,
  ``chat_template.json``, ``preprocessor_config.json``, ``model-0000N-of-00002.safetensors`` + index,
  transformers-4.36 key names (``language_model.model.*``);
* ``e``: an older ``mm_use_im_start_end: true`` checkpoint (added ``<im_patch>``/``<im_start>``/``<im_end>``
  tokens, single linear projector, no ``image_aspect_ratio``).

``build_hf_cache(hf_home)`` writes the tower into ``<hf_home>/hub`` as ``snapshot_download`` would;
point ``HF_HOME`` there (and set ``HF_HUB_OFFLINE=1``) for the hub id to resolve.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

import torch

from lmms_ac.testing.sentencepiece_model import train_llama_sentencepiece

LAYOUTS = {
    "a": "LLaVA-1.5 as released (model_type llava, transformers 4.31, .bin shards, tokenizer.model)",
    "b": "LLaVA >= 1.2 (model_type llava_llama, transformers 4.37)",
    "c": "stage-1 mm_projector.bin + Vicuna-layout model_base",
    "d": "llava-hf as on the hub (processor_config.json, chat_template.json, safetensors shards)",
    "e": "older mm_use_im_start_end checkpoint (<im_start>/<im_end> tokens, linear projector)",
}
TOWER_ID = "openai/clip-vit-large-patch14-336"
TOWER_COMMIT = "ce19dc912ca5cd21c8a653c79e251e1d3fd7f80b"  # a 40-hex snapshot name, as the hub cache has
IMAGE_SIZE, PATCH_SIZE, VISION_DIM = 32, 8, 32
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
LLAVA_HF_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', "
    "'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _added(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False}  # fmt: skip


def write_json(path: Path, obj: dict) -> None:
    """``obj`` as indented JSON, as the hub's config files are written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def write_sentencepiece_tokenizer(directory: Path, model_max_length: int = 2048, legacy: Optional[bool] = False) -> int:
    """``tokenizer.model`` + LLaVA-1.5/Vicuna's ``tokenizer_config.json`` and ``special_tokens_map.json``
    (``legacy=None``: no ``legacy`` field, as LLaMA-1-era files); returns the vocabulary size."""
    import sentencepiece

    data = train_llama_sentencepiece(str(directory / "tokenizer.model"))
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": _added("<s>"),
        "clean_up_tokenization_spaces": False,
        "eos_token": _added("</s>"),
        "legacy": legacy,
        "model_max_length": model_max_length,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": _added("<unk>"),
    }
    if legacy is None:
        config.pop("legacy")
    write_json(directory / "tokenizer_config.json", config)
    specials = {
        "bos_token": _added("<s>"),
        "eos_token": _added("</s>"),
        "pad_token": "<unk>",
        "unk_token": _added("<unk>"),
    }
    for value in specials.values():
        if isinstance(value, dict):
            value.pop("__type")
    write_json(directory / "special_tokens_map.json", specials)
    return sentencepiece.SentencePieceProcessor(model_proto=data).get_piece_size()


def llama_config_fields(vocab_size: int, transformers_version: str = "4.31.0") -> dict:
    """A LlamaConfig as transformers 4.31 / 4.37 wrote it (``to_diff_dict``: every size field present)."""
    fields = {
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_position_embeddings": 4096,
        "num_key_value_heads": TEXT["num_attention_heads"],
        "pad_token_id": 0,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": transformers_version,
        "use_cache": True,
        "vocab_size": vocab_size,
        **TEXT,
    }
    if transformers_version >= "4.37":
        fields.update(attention_bias=False, attention_dropout=0.0, rope_theta=10000.0)
    return fields


def _random_llama_state(vocab_size: int, seed: int) -> Dict[str, torch.Tensor]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, num_key_value_heads=TEXT["num_attention_heads"], **TEXT)
    model = LlamaForCausalLM(cfg)
    return {k: v.detach().half().contiguous() for k, v in model.state_dict().items() if "rotary" not in k}


def _projector_state(kind: str, seed: int) -> Dict[str, torch.Tensor]:
    """float16, as LLaVA saved it (``torch_dtype: float16``)."""
    return {k: v.half() for k, v in _projector_state_fp32(kind, seed).items()}


def _projector_state_fp32(kind: str, seed: int) -> Dict[str, torch.Tensor]:
    torch.manual_seed(seed + 1)
    hid = TEXT["hidden_size"]
    if kind == "linear":
        return {
            "model.mm_projector.weight": torch.randn(hid, VISION_DIM) * 0.1,
            "model.mm_projector.bias": torch.zeros(hid),
        }
    return {
        "model.mm_projector.0.weight": torch.randn(hid, VISION_DIM) * 0.1,
        "model.mm_projector.0.bias": torch.randn(hid) * 0.01,
        "model.mm_projector.2.weight": torch.randn(hid, hid) * 0.1,
        "model.mm_projector.2.bias": torch.randn(hid) * 0.01,
    }


def hub_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """A llava-hf model's weights under the names transformers 4.3x saved on the hub (``language_model.model.*``,
    ``vision_tower.vision_model.*``, ``multi_modal_projector.*``, ``language_model.lm_head.weight``), in float16 as
    released; transformers 5 names them ``model.language_model.*``/``model.vision_tower.*``/``model.*``/
    ``lm_head.weight``."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.language_model."):
            key = "language_model.model." + key[len("model.language_model.") :]
        elif key.startswith("model.vision_tower.") and not key.startswith("model.vision_tower.vision_model."):
            # transformers 5's CLIP/SigLIP vision models dropped the ``vision_model.`` level the files still carry
            key = "vision_tower.vision_model." + key[len("model.vision_tower.") :]
        elif key.startswith("model."):
            key = key[len("model.") :]
        elif key == "lm_head.weight":
            key = "language_model.lm_head.weight"
        state[key] = value.detach().half().contiguous()
    return state


def write_sharded(
    directory: Path, state: Dict[str, torch.Tensor], n_shards: int = 2, safetensors: bool = False
) -> List[str]:
    """Shards named and indexed as transformers 4 wrote them (``pytorch_model-00001-of-00002.bin`` or
    ``model-00001-of-00002.safetensors`` with ``*.index.json``)."""
    keys = list(state)
    per = -(-len(keys) // n_shards)
    stem, ext = ("model", "safetensors") if safetensors else ("pytorch_model", "bin")
    weight_map, names = {}, []
    for i in range(n_shards):
        name = f"{stem}-{i + 1:05d}-of-{n_shards:05d}.{ext}"
        part = {k: state[k] for k in keys[i * per : (i + 1) * per]}
        if safetensors:
            from safetensors.torch import save_file

            save_file(part, str(directory / name), metadata={"format": "pt"})
        else:
            torch.save(part, directory / name)
        weight_map.update({k: name for k in part})
        names.append(name)
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = f"{stem}.{ext}.index.json"
    write_json(directory / index, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return names


def _generation_config(directory: Path, version: str) -> None:
    write_json(directory / "generation_config.json",
                {"bos_token_id": 1, "eos_token_id": 2, "max_length": 4096, "pad_token_id": 0,
                 "transformers_version": version})  # fmt: skip


def _clip_configs():
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=99, max_position_embeddings=16, projection_dim=32),
        vision_config=dict(hidden_size=VISION_DIM, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                           image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32),
        projection_dim=32,
    )  # fmt: skip


def _preprocessor(processor_class: str = "") -> dict:
    out = {
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD,
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": IMAGE_SIZE},
    }
    if processor_class:
        out["processor_class"] = processor_class
    return out


def hub_snapshot(hf_home: str, repo_id: str, commit: str) -> Path:
    """The snapshot folder of ``repo_id`` at ``commit`` in ``<hf_home>/hub``, laid out as ``snapshot_download``
    leaves it (``models--org--name/snapshots/<commit>``, ``refs/main`` naming the commit)."""
    repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


def build_hf_cache(hf_home: str, seed: int = 0) -> Path:
    """``openai/clip-vit-large-patch14-336`` (tiny, random) in ``<hf_home>/hub`` as the hub cache lays it out."""
    from transformers import CLIPModel

    snap = hub_snapshot(hf_home, TOWER_ID, TOWER_COMMIT)
    torch.manual_seed(seed + 7)
    model = CLIPModel(_clip_configs())
    config = model.config.to_dict()
    config.update(architectures=["CLIPModel"], transformers_version="4.21.3")
    write_json(snap / "config.json", config)
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, snap / "pytorch_model.bin")
    write_json(snap / "preprocessor_config.json", {**_preprocessor(), "feature_extractor_type": "CLIPFeatureExtractor"})
    return snap


def _original_config(model_type: str, version: str, vocab_size: int, **mm) -> dict:
    config = {
        "_name_or_path": "./checkpoints/vicuna-7b-v1-5",
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": model_type,
        **llama_config_fields(vocab_size, version),
        "freeze_mm_mlp_adapter": False,
        "image_aspect_ratio": "pad",
        "mm_hidden_size": VISION_DIM,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": TOWER_ID,
        "tune_mm_mlp_adapter": False,
        "tune_mm_vision_resolver": False,
        "unfreeze_mm_vision_tower": False,
        "use_mm_proj": True,
    }
    if version >= "4.37":
        config.update(mm_patch_merge_type="flat", mm_projector_lr=None, tokenizer_model_max_length=2048,
                      tokenizer_padding_side="right", mm_vision_tower_lr=None)  # fmt: skip
    config.update(mm)
    return dict(sorted(config.items()))


def build_original(directory: str, layout: str = "a", seed: int = 0) -> Dict[str, str]:
    """Layouts a, b, c (stage-1 + Vicuna base) and e; returns {"checkpoint": ..., "model_base": ... (c only)}."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    version = "4.37.2" if layout in ("b", "c") else "4.31.0"
    if layout == "c":
        base = out.parent / "vicuna-7b-v1.5-tiny"
        base.mkdir(parents=True, exist_ok=True)
        vocab = write_sentencepiece_tokenizer(base, model_max_length=4096)
        base_cfg = {"_name_or_path": "vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                    **llama_config_fields(vocab, "4.31.0")}  # fmt: skip
        write_json(base / "config.json", dict(sorted(base_cfg.items())))
        write_sharded(base, _random_llama_state(vocab, seed))
        _generation_config(base, "4.31.0")
        cfg = _original_config("llava_llama", version, vocab, tune_mm_mlp_adapter=True)
        write_json(out / "config.json", cfg)
        torch.save(_projector_state("mlp2x_gelu", seed), out / "mm_projector.bin")
        return {"checkpoint": str(out), "model_base": str(base)}
    vocab = write_sentencepiece_tokenizer(out, legacy=None if layout == "e" else False)
    state = _random_llama_state(vocab, seed)
    if layout == "e":
        added = ["<im_patch>", "<im_start>", "<im_end>"]
        write_json(out / "added_tokens.json", {t: vocab + i for i, t in enumerate(added)})
        vocab += len(added)
        for key in ("model.embed_tokens.weight", "lm_head.weight"):
            extra = state[key][: len(added)].clone()
            state[key] = torch.cat([state[key], extra]).contiguous()
        cfg = _original_config("llava", version, vocab, mm_use_im_start_end=True, mm_use_im_patch_token=True)
        for key in ("mm_projector_type", "image_aspect_ratio", "mm_vision_select_feature"):
            cfg.pop(key)  # written before these fields existed
        state.update(_projector_state("linear", seed))
    else:
        cfg = _original_config("llava" if layout == "a" else "llava_llama", version, vocab)
        state.update(_projector_state("mlp2x_gelu", seed))
    write_json(out / "config.json", cfg)
    write_sharded(out, state)
    _generation_config(out, version)
    return {"checkpoint": str(out)}


def build_llava_hf(directory: str, seed: int = 0) -> Dict[str, str]:
    """Layout d: llava-hf's files as on the hub (transformers 4.36 key names and config)."""
    from transformers import AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    sp_dir = out / ".sp"
    vocab = write_sentencepiece_tokenizer(sp_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(sp_dir))
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    image_id, pad_id, full_vocab = vocab, vocab + 1, vocab + 2
    tokenizer.save_pretrained(str(out))
    (out / "tokenizer.model").write_bytes((sp_dir / "tokenizer.model").read_bytes())
    for f in sp_dir.iterdir():
        f.unlink()
    sp_dir.rmdir()
    text = {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "torch_dtype": "float16", "vocab_size": full_vocab,
            "num_key_value_heads": TEXT["num_attention_heads"], **TEXT}  # fmt: skip
    vision = {"hidden_size": VISION_DIM, "image_size": IMAGE_SIZE, "intermediate_size": 64,
              "model_type": "clip_vision_model", "num_attention_heads": 4, "num_hidden_layers": 3,
              "patch_size": PATCH_SIZE, "projection_dim": 32, "vocab_size": 32000}  # fmt: skip
    config = {"architectures": ["LlavaForConditionalGeneration"], "ignore_index": -100, "image_token_index": image_id,
              "model_type": "llava", "pad_token_id": pad_id, "projector_hidden_act": "gelu", "text_config": text,
              "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.36.0.dev0",
              "vision_config": vision, "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
              "vocab_size": full_vocab}  # fmt: skip
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(
        LlavaConfig.from_dict({k: v for k, v in config.items() if k != "transformers_version"})
    )
    state = hub_state_dict(model)
    write_json(out / "config.json", config)
    write_sharded(out, state, safetensors=True)
    _generation_config(out, "4.36.0.dev0")
    write_json(out / "preprocessor_config.json", _preprocessor("LlavaProcessor"))
    write_json(out / "processor_config.json",
                {"image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": PATCH_SIZE,
                 "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "default"})  # fmt: skip
    write_json(out / "chat_template.json", {"chat_template": LLAVA_HF_TEMPLATE})
    return {"checkpoint": str(out)}


def build_layout(root: str, layout: str, seed: int = 0) -> Dict[str, str]:
    """One released layout under ``root`` (``a``-``e``, see ``LAYOUTS``); the tower comes from ``build_hf_cache``."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    names = {"a": "llava-v1.5-7b", "b": "llava-v1.5-7b-lora-merged", "c": "llava-v1.5-7b-pretrain",
             "d": "llava-1.5-7b-hf", "e": "llava-v1-0719-336px"}  # fmt: skip
    target = str(Path(root) / layout / names[layout])
    return build_llava_hf(target, seed) if layout == "d" else build_original(target, layout, seed)
