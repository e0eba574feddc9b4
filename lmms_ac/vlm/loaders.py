"""Load a ``LlavaStyleVLM`` from the checkpoints users have.

* llava-hf (``model_type: llava``, ``LlavaForConditionalGeneration``): vision tower, projector,
  LLM and processor all come from the checkpoint.
* original LLaVA (``model_type: llava_llama`` and friends, ``mm_*`` config fields,
  ``model.mm_projector.*`` weights): the LLM loads as its base causal LM, the projector from its
  keys, and the vision tower from ``mm_vision_tower`` through the representation registry.
  A stage-1 checkpoint (only ``mm_projector.bin``) needs ``model_base=`` for the LLM.

``vision_tower=`` overrides the tower a checkpoint names (its hidden size must fit the projector).
Weights load through safetensors or ``torch.load(weights_only=True)``; remote code stays off.

Each format is run as its own reference code runs it (``auto``): original checkpoints tokenize
prompts chunk by chunk around ``<image>`` (LLaVA's ``tokenizer_image_token``) and preprocess images
with the PIL-backed image processor (transformers 4's, which LLaVA used); llava-hf checkpoints use
their processor's joint tokenization and transformers' default image processor backend.
``tokenization=`` and ``image_backend=`` override either choice.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, List, Optional, Union

import torch
from loguru import logger

from lmms_ac.model_args import parse_bool
from lmms_ac.vision import load_representation
from lmms_ac.vision.hf import IMAGE_BACKENDS, HFVisionTower, load_image_processor
from lmms_ac.vlm.model import LlavaStyleVLM
from lmms_ac.vlm.projector import build_projector, projector_from_llava_hf, strip_projector_prefix
from lmms_ac.vlm.tokenize import FORMAT_TOKENIZATION, check_tokenization

_MM_KEYS = (
    "mm_vision_tower",
    "vision_tower",
    "mm_projector_type",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "mm_hidden_size",
    "image_aspect_ratio",
    "mm_use_im_start_end",
    "mm_use_im_patch_token",
    "tune_mm_mlp_adapter",
    "mm_projector_lr",
    "mm_patch_merge_type",
    "image_grid_pinpoints",
    "freeze_mm_mlp_adapter",
    "mm_vision_tower_lr",
    "tokenizer_padding_side",
    "tokenizer_model_max_length",
    "unfreeze_mm_vision_tower",
    "use_mm_proj",
)
_DTYPES = {
    "auto": "auto",
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or of an unknown format; the message says how to fix it."""


def resolve_dtype(dtype: Union[str, torch.dtype, None]) -> Union[str, torch.dtype]:
    if dtype is None:
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def read_config(pretrained: str) -> Dict[str, Any]:
    """config.json of a local directory or a hub repo; clear error when neither exists."""
    local = os.path.expanduser(pretrained)
    if os.path.isdir(local):
        path = os.path.join(local, "config.json")
        if not os.path.isfile(path):
            raise CheckpointError(
                f"{pretrained} has no config.json; point pretrained= at a llava-hf or original LLaVA checkpoint "
                "directory"
            )
        with open(path) as fh:
            try:
                return json.load(fh)
            except ValueError as err:  # JSONDecodeError / UnicodeDecodeError name no file
                raise CheckpointError(
                    f"{path} is not valid JSON ({err}); the checkpoint is damaged or incomplete: "
                    "copy or download it again"
                ) from None
    if local.startswith(("/", ".", "~")) or local.count("/") > 1 or os.path.exists(local):
        raise CheckpointError(f"checkpoint {pretrained!r} does not exist; pass pretrained=<local directory or hub id>")
    try:
        from huggingface_hub import hf_hub_download

        with open(hf_hub_download(pretrained, "config.json")) as fh:
            return json.load(fh)
    except Exception as err:  # network errors, missing repo, gated repo...
        raise CheckpointError(
            f"cannot read the config of checkpoint {pretrained!r} ({type(err).__name__}: {err}). "
            "Pass a local directory, or download it first on a machine with a hub (huggingface-cli download "
            f"{pretrained})"
        ) from err


def checkpoint_format(config: Dict[str, Any]) -> str:
    mtype = config.get("model_type", "")
    if mtype == "llava" or "LlavaForConditionalGeneration" in (config.get("architectures") or []):
        return "llava_hf"
    if mtype.startswith("llava") or "mm_vision_tower" in config or "mm_projector_type" in config:
        return "original"
    raise CheckpointError(
        f"config model_type {mtype!r} is neither llava-hf ('llava') nor original LLaVA ('llava_llama', with mm_* "
        "fields)"
    )


def load_vlm(
    pretrained: str,
    *,
    model_base: Optional[str] = None,
    vision_tower: Optional[str] = None,
    dtype: Union[str, torch.dtype, None] = "auto",
    device: Union[str, torch.device] = "cpu",
    attn_implementation: Optional[str] = None,
    image_aspect_ratio: str = "auto",
    trust_remote_code: bool = False,
    tokenization: str = "auto",
    image_backend: str = "auto",
) -> LlavaStyleVLM:
    """Load either checkpoint format as a ``LlavaStyleVLM`` on ``device``.

    ``tokenization``: ``auto`` (the format's own), ``chunked`` or ``joint``; ``image_backend``:
    ``auto`` (``pil`` for original checkpoints, transformers' default for llava-hf), ``pil`` or
    ``torchvision`` (see ``lmms_ac.vision.hf``)."""
    trust_remote_code = parse_bool(trust_remote_code, "trust_remote_code")
    if image_backend not in ("auto", *IMAGE_BACKENDS):
        raise ValueError(f"unknown image_backend {image_backend!r}; choose auto, {', '.join(IMAGE_BACKENDS)}")
    if tokenization != "auto":
        check_tokenization(tokenization)
    config = read_config(pretrained)
    fmt = checkpoint_format(config)
    torch_dtype = resolve_dtype(dtype)
    backend = None if image_backend == "auto" else image_backend
    if fmt == "llava_hf":
        vlm = _load_llava_hf(
            pretrained,
            config,
            vision_tower,
            torch_dtype,
            attn_implementation,
            image_aspect_ratio,
            trust_remote_code,
            backend,
        )
    else:
        vlm = _load_original(
            pretrained,
            config,
            model_base,
            vision_tower,
            torch_dtype,
            attn_implementation,
            image_aspect_ratio,
            trust_remote_code,
            backend or "pil",
        )
    vlm.prompt_tokenizer.mode = FORMAT_TOKENIZATION[fmt] if tokenization == "auto" else tokenization
    vlm.eval().requires_grad_(False)
    return vlm.to(device)


def _causal_lm_around(text_config: Any, base_model: torch.nn.Module, lm_head: torch.nn.Module) -> torch.nn.Module:
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


def _load_llava_hf(
    pretrained,
    config,
    vision_tower,
    torch_dtype,
    attn_implementation,
    image_aspect_ratio,
    trust_remote_code,
    image_backend=None,
):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    kwargs = dict(dtype=torch_dtype, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = LlavaForConditionalGeneration.from_pretrained(pretrained, **kwargs)
    processor = AutoProcessor.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
    layer = model.config.vision_feature_layer
    if not isinstance(layer, int):
        raise CheckpointError(
            f"{pretrained}: multi-layer vision features {layer} are not supported; LLaVA-1.5 uses a single layer (-2)"
        )
    strategy = model.config.vision_feature_select_strategy
    has_cls = model.config.vision_config.model_type.startswith("clip")
    if strategy != "default" or not has_cls:
        raise CheckpointError(
            f"{pretrained}: vision_feature_select_strategy={strategy!r} on a {model.config.vision_config.model_type} "
            "tower "
            "does not give a plain patch grid; only CLIP-like towers with 'default' (drop CLS) are supported"
        )
    if vision_tower:
        vision = load_representation(
            vision_tower, select_layer=layer, torch_dtype=model.dtype, image_backend=image_backend
        )
    else:
        image_processor = processor.image_processor
        if image_backend:  # the same processor config through the other implementation
            image_processor = load_image_processor(pretrained, image_backend, trust_remote_code)
        vision = HFVisionTower(
            f"llava-hf:{pretrained}", model.model.vision_tower, image_processor, layer, num_prefix_tokens=1
        )
    projector = projector_from_llava_hf(model.model.multi_modal_projector)
    _check_fit(vision, projector, pretrained)
    llm = _causal_lm_around(model.config.text_config, model.model.language_model, model.lm_head)
    llm.generation_config = model.generation_config
    aspect = "original" if image_aspect_ratio == "auto" else image_aspect_ratio
    tokenizer = processor.tokenizer
    if getattr(processor, "chat_template", None) and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = processor.chat_template
    image_token = getattr(processor, "image_token", "<image>")
    return LlavaStyleVLM(vision, projector, llm, tokenizer, image_aspect_ratio=aspect, image_token=image_token)


def _weight_files(directory: str) -> List[str]:
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")) + glob.glob(os.path.join(directory, "*.bin")))
    return [
        f for f in files if not os.path.basename(f).startswith(("training_args", "optimizer", "scheduler", "rng_state"))
    ]


def _read_state(path: str, keep=lambda k: True) -> Dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys() if keep(k)}
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {k: v for k, v in state.items() if keep(k)}


def _projector_state(directory: str) -> Dict[str, torch.Tensor]:
    files = _weight_files(directory)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = os.path.join(directory, index_name)
        if os.path.isfile(index):  # read only the shards that hold projector keys
            with open(index) as fh:
                weight_map = json.load(fh)["weight_map"]
            shards = sorted({os.path.join(directory, v) for k, v in weight_map.items() if "mm_projector." in k})
            files = shards + [f for f in files if os.path.basename(f) == "mm_projector.bin"]
    state: Dict[str, torch.Tensor] = {}
    for f in files:
        state.update(_read_state(f, keep=lambda k: "mm_projector." in k))
    return strip_projector_prefix(state)


def _has_llm_weights(directory: str) -> bool:
    return any(os.path.basename(f) != "mm_projector.bin" for f in _weight_files(directory))


def _load_original(
    pretrained,
    config,
    model_base,
    vision_tower,
    torch_dtype,
    attn_implementation,
    image_aspect_ratio,
    trust_remote_code,
    image_backend="pil",
):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    local = os.path.expanduser(pretrained)
    if not os.path.isdir(local):
        from huggingface_hub import snapshot_download

        local = snapshot_download(pretrained)
    mtype = config.get("model_type", "llava_llama")
    base_type = mtype[len("llava_") :] if mtype.startswith("llava_") else "llama"
    base_type = {"qwen": "qwen2"}.get(base_type, base_type)
    if config.get("mm_vision_select_feature", "patch") != "patch":
        raise CheckpointError(
            f"{pretrained}: mm_vision_select_feature={config['mm_vision_select_feature']!r} is not supported; only "
            "'patch' (no CLS) is"
        )
    llm_source = local if _has_llm_weights(local) else model_base
    if llm_source is None:
        raise CheckpointError(
            f"{pretrained} holds only projector weights (a stage-1 checkpoint); pass model_base=<base LLM directory or "
            "hub id>, e.g. lmsys/vicuna-7b-v1.5"
        )
    projector_state = _projector_state(local)
    if not projector_state:
        raise CheckpointError(
            f"{pretrained} has no projector weights: no 'model.mm_projector.*' keys in its weight files "
            f"{[os.path.basename(f) for f in _weight_files(local)]} and no mm_projector.bin"
        )
    spec = vision_tower or config.get("mm_vision_tower") or config.get("vision_tower")
    if not spec:
        raise CheckpointError(f"{pretrained}: config names no vision tower (mm_vision_tower); pass vision_tower=<spec>")
    from lmms_ac.vision.concat import multi_tower_spec

    spec = multi_tower_spec(spec) or spec  # forks write multi-encoder towers as names joined by '.'
    select_layer = int(config.get("mm_vision_select_layer", -2))
    vision = load_representation(
        spec,
        select_layer=select_layer,
        torch_dtype=None if torch_dtype == "auto" else torch_dtype,
        trust_remote_code=trust_remote_code,
        image_backend=image_backend,
    )

    llm_fields = {
        k: v
        for k, v in config.items()
        if k not in _MM_KEYS and k not in ("model_type", "architectures", "_name_or_path", "transformers_version")
    }
    if llm_source is local:
        llm_config = AutoConfig.for_model(base_type, **llm_fields)
    else:
        llm_config = AutoConfig.from_pretrained(llm_source, trust_remote_code=trust_remote_code)
    kwargs = dict(config=llm_config, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    llm = AutoModelForCausalLM.from_pretrained(llm_source, **kwargs)

    kind = config.get("mm_projector_type", "linear")
    weights = {k: v for k, v in projector_state.items()}
    first = weights.get("0.weight")
    vision_dim = int(config.get("mm_hidden_size") or (first.shape[1] if first is not None else vision.hidden_size))
    projector = build_projector(kind, vision_dim, llm.config.hidden_size, bias="0.bias" in weights)
    try:
        projector.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{pretrained}: projector weights do not fit mm_projector_type={kind!r}: {err}") from err
    projector.to(dtype=llm.dtype)
    _check_fit(vision, projector, pretrained)
    tok_source = local if glob.glob(os.path.join(local, "tokenizer*")) else llm_source
    tokenizer = AutoTokenizer.from_pretrained(tok_source, trust_remote_code=trust_remote_code)
    if image_aspect_ratio == "auto":
        configured = config.get("image_aspect_ratio", "pad")
        if configured not in ("pad", "square", "original", None):
            logger.warning(
                f"image_aspect_ratio={configured!r} (e.g. LLaVA-NeXT anyres) is not implemented; using 'original'"
            )
        image_aspect_ratio = "pad" if configured == "pad" else "original"
    return LlavaStyleVLM(
        vision,
        projector,
        llm,
        tokenizer,
        image_aspect_ratio=image_aspect_ratio,
        tokenization=FORMAT_TOKENIZATION["original"],
    )


def _check_fit(vision, projector, pretrained: str) -> None:
    first = next(m for m in projector.modules() if isinstance(m, torch.nn.Linear))
    if first.in_features != vision.hidden_size:
        raise CheckpointError(
            f"{pretrained}: vision tower {vision.spec} gives {vision.hidden_size}-dim tokens but the projector expects "
            f"{first.in_features}; pick a vision_tower= that matches the checkpoint"
        )
