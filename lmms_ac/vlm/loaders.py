"""Load a ``LlavaStyleVLM`` from the checkpoints users have.

The format is read from the config's content, not from ``model_type`` alone (LLaVA-1.5 as released
says ``model_type: llava``, the name llava-hf uses too):

* original LLaVA: ``architectures`` ``LlavaLlamaForCausalLM``/``LlavaMistralForCausalLM``/... or any
  ``mm_*`` field, whatever ``model_type`` says (``llava``, ``llava_llama``, ``llava_mistral``, ...).
  The LLM loads as its base causal LM from the checkpoint's own size fields (a missing one is an
  error, never a default), the projector from its ``model.mm_projector.*`` keys, and the vision
  tower from ``mm_vision_tower`` through the representation registry. A stage-1 checkpoint (only
  ``mm_projector.bin``) needs ``model_base=`` for the LLM. ``mm_use_im_start_end`` checkpoints get
  ``<im_start>``/``<im_end>`` around each image, as LLaVA's evaluation code writes them.
* llava-hf: ``vision_config`` and ``text_config`` (``LlavaForConditionalGeneration``): vision tower,
  projector, LLM and processor all come from the checkpoint.

llava-hf LLaVA-NeXT and OneVision (``llava_next``/``llava_onevision``) load through
``lmms_ac.vlm.next_hf`` with their anyres tiling; original-format LLaVA-NeXT (``image_aspect_ratio: anyres``)
and LLaVA-OneVision (``anyres_max_N``), both ``mm_patch_merge_type: spatial_unpad``, through
``lmms_ac.vlm.next_original`` into the same tiled model. NeXT-Video is refused at load: its input is not
implemented, and one plain view instead would give wrong numbers.

A SentencePiece ``tokenizer.model`` is tokenized as SentencePiece does (``lmms_ac.vlm.tokenize``),
checked against the ``sentencepiece`` package at load.

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
from typing import Any, Callable, Dict, List, Optional, Union

import torch

from lmms_ac.doctor import sentencepiece_problem
from lmms_ac.model_args import parse_bool
from lmms_ac.vision import load_representation
from lmms_ac.vision.hf import IMAGE_BACKENDS, HFVisionTower, load_image_processor
from lmms_ac.vlm.assemble import causal_lm_around as _causal_lm_around
from lmms_ac.vlm.assemble import check_fit as _check_fit
from lmms_ac.vlm.errors import CheckpointError
from lmms_ac.vlm.model import LlavaStyleVLM
from lmms_ac.vlm.next_hf import TILED_HF_TYPES, load_llava_next_hf
from lmms_ac.vlm.next_original import build_next_original, check_next_original, is_tiled_original, wanted_keys
from lmms_ac.vlm.projector import build_projector, projector_from_llava_hf, strip_projector_prefix
from lmms_ac.vlm.tokenize import (
    FORMAT_TOKENIZATION,
    check_tokenization,
    match_sentencepiece,
    sentencepiece_mismatches,
)

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


# original LLaVA's classes (llava/model/language_model/*.py and forks) -> the base LLM's model_type
ORIGINAL_ARCHITECTURES = {
    "LlavaLlamaForCausalLM": "llama",
    "LlavaMistralForCausalLM": "mistral",
    "LlavaMptForCausalLM": "mpt",
    "LlavaQwenForCausalLM": "qwen2",
    "LlavaGemmaForCausalLM": "gemma",
}
# llava-hf model types whose input (tiles, row-end tokens, pooling) lmms_ac_llava does not build yet
# (llava_next and llava_onevision load through lmms_ac.vlm.next_hf)
UNSUPPORTED_HF_TYPES = {
    "llava_next_video": "LLaVA-NeXT-Video",
}
# the fields that size an LLM; a config without one would silently become the library's default (a 7B Llama)
SIZE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def checkpoint_format(config: Dict[str, Any], source: str = "the checkpoint") -> str:
    """``original`` or ``llava_hf``, decided by the config's content; ``CheckpointError`` for anything else."""
    mtype = config.get("model_type", "")
    archs = list(config.get("architectures") or [])
    mm_fields = sorted(k for k in config if k.startswith("mm_"))
    if any(a in ORIGINAL_ARCHITECTURES for a in archs) or mm_fields:
        return "original"
    if mtype in UNSUPPORTED_HF_TYPES:
        raise CheckpointError(
            f"{source}: model_type {mtype!r} is a llava-hf {UNSUPPORTED_HF_TYPES[mtype]} checkpoint, which "
            "lmms_ac_llava does not support yet (its tiled image input is not implemented); evaluate it with "
            "lmms-eval's own llava_hf model meanwhile"
        )
    if isinstance(config.get("vision_config"), dict) and isinstance(config.get("text_config"), dict):
        if mtype != "llava" and mtype not in TILED_HF_TYPES:
            raise CheckpointError(
                f"{source}: model_type {mtype!r} (architectures {archs}) has vision_config/text_config but is not "
                "llava-hf's LLaVA ('llava', LlavaForConditionalGeneration); only LLaVA-style checkpoints load"
            )
        unnamed = [k for k in ("vision_config", "text_config") if not config[k].get("model_type")]
        if unnamed:  # transformers would fill them with its defaults (a CLIP-L and a 7B Llama)
            raise CheckpointError(
                f"{source}: {' and '.join(unnamed)} name no model_type; llava-hf configs name the tower's and the "
                "LLM's type (e.g. clip_vision_model, llama): the file is damaged or incomplete, copy it again"
            )
        return "llava_hf"
    raise CheckpointError(
        f"{source}: config.json fits neither checkpoint format: model_type {mtype!r}, architectures {archs}, no mm_* "
        "fields, no vision_config/text_config. Expected llava-hf (vision_config + text_config) or original LLaVA "
        "(LlavaLlamaForCausalLM with mm_vision_tower, mm_projector_type, ...); point pretrained= at such a checkpoint"
    )


def original_base_type(config: Dict[str, Any]) -> str:
    """The base LLM's model_type of an original-format config: from ``architectures``, else ``llava_<base>``."""
    for arch in config.get("architectures") or []:
        if arch in ORIGINAL_ARCHITECTURES:
            return ORIGINAL_ARCHITECTURES[arch]
    mtype = config.get("model_type", "")
    base = mtype[len("llava_") :] if mtype.startswith("llava_") else "llama"
    return {"qwen": "qwen2"}.get(base, base)


def check_original_supported(config: Dict[str, Any], source: str) -> None:
    """Refuse what the original-format path cannot run correctly (before anything heavy loads)."""
    if is_tiled_original(config):
        check_next_original(config, original_base_type(config), source)
    elif config.get("mm_vision_select_feature", "patch") != "patch":
        raise CheckpointError(
            f"{source}: mm_vision_select_feature={config['mm_vision_select_feature']!r} is not supported; only "
            "'patch' (no CLS) is"
        )


def require_size_fields(fields: Dict[str, Any], base_type: str, source: str) -> None:
    """Every size field the base config class has must be in ``fields`` (under its own or its mapped name)."""
    from transformers import CONFIG_MAPPING

    if base_type not in CONFIG_MAPPING:
        raise CheckpointError(
            f"{source}: base LLM type {base_type!r} (from architectures/model_type) is unknown to transformers; "
            "write the LLM's model_type into config.json or pass model_base=<the base LLM>"
        )
    cls = CONFIG_MAPPING[base_type]
    amap = getattr(cls, "attribute_map", {}) or {}
    defaults = cls().to_dict()
    wanted = [n for n in SIZE_FIELDS if n in defaults or n in amap]
    missing = [n for n in wanted if n not in fields and amap.get(n) not in fields]
    if missing:
        raise CheckpointError(
            f"{source}: config.json lacks {', '.join(missing)}; a {base_type} LLM built from default values would not "
            "be this checkpoint. Restore the fields from the base LLM's config.json (the checkpoint is incomplete)"
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
    fmt = checkpoint_format(config, f"{pretrained}/config.json")
    torch_dtype = resolve_dtype(dtype)
    backend = None if image_backend == "auto" else image_backend
    if fmt == "llava_hf":  # the tiled models (NeXT, OneVision) and plain LLaVA take the same arguments
        load = load_llava_next_hf if config.get("model_type") in TILED_HF_TYPES else _load_llava_hf
        vlm = load(
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


def _checkpoint_state(directory: str, keep: Callable[[str], bool]) -> Dict[str, torch.Tensor]:
    """The tensors of ``directory``'s weight files whose names ``keep`` accepts, reading only the shards that
    hold them when an index names them."""
    files = _weight_files(directory)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = os.path.join(directory, index_name)
        if os.path.isfile(index):
            with open(index) as fh:
                weight_map = json.load(fh)["weight_map"]
            shards = sorted({os.path.join(directory, v) for k, v in weight_map.items() if keep(k)})
            files = shards + [f for f in files if os.path.basename(f) == "mm_projector.bin"]
    state: Dict[str, torch.Tensor] = {}
    for f in files:
        state.update(_read_state(f, keep=keep))
    return state


def _projector_state(directory: str) -> Dict[str, torch.Tensor]:
    return strip_projector_prefix(_checkpoint_state(directory, lambda k: "mm_projector." in k))


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
    from transformers import AutoConfig, AutoModelForCausalLM

    local = os.path.expanduser(pretrained)
    if not os.path.isdir(local):
        from huggingface_hub import snapshot_download

        local = snapshot_download(pretrained)
    check_original_supported(config, f"{pretrained}/config.json")
    base_type = original_base_type(config)
    llm_source = local if _has_llm_weights(local) else model_base
    if llm_source is None:
        raise CheckpointError(
            f"{pretrained} holds only projector weights (a stage-1 checkpoint); pass model_base=<base LLM directory or "
            "hub id>, e.g. lmsys/vicuna-7b-v1.5"
        )
    llm_fields = {
        k: v
        for k, v in config.items()
        if k not in _MM_KEYS and k not in ("model_type", "architectures", "_name_or_path", "transformers_version")
    }
    if llm_source is local:
        require_size_fields(llm_fields, base_type, f"{pretrained}/config.json")
    # the tokenizer first: it is cheap, and a broken one must fail before gigabytes of weights load
    tok_source = local if glob.glob(os.path.join(local, "tokenizer*")) else llm_source
    tokenizer = load_original_tokenizer(tok_source, trust_remote_code)
    tiled = is_tiled_original(config)  # LLaVA-NeXT: checked by check_original_supported above
    if tiled and (vision_tower or image_aspect_ratio not in ("auto", "anyres")):
        raise CheckpointError(
            f"{pretrained}: a tiled (LLaVA-NeXT/OneVision) checkpoint runs on its own tower and anyres tiles (trained "
            "so); leave "
            f"vision_tower and image_aspect_ratio unset (got vision_tower={vision_tower!r}, "
            f"image_aspect_ratio={image_aspect_ratio!r})"
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
    if not tiled:
        vision = load_representation(
            spec,
            select_layer=select_layer,
            torch_dtype=None if torch_dtype == "auto" else torch_dtype,
            trust_remote_code=trust_remote_code,
            image_backend=image_backend,
        )

    if llm_source is local:
        llm_config = AutoConfig.for_model(base_type, **llm_fields)
    else:
        llm_config = AutoConfig.from_pretrained(llm_source, trust_remote_code=trust_remote_code)
    kwargs = dict(config=llm_config, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    llm = AutoModelForCausalLM.from_pretrained(llm_source, **kwargs)
    if tiled:
        return build_next_original(
            pretrained,
            config,
            llm,
            tokenizer,
            _checkpoint_state(local, wanted_keys),
            spec,
            image_backend,
            trust_remote_code,
            FORMAT_TOKENIZATION["original"],
        )

    kind = config.get("mm_projector_type", "linear")
    weights = dict(projector_state)
    if set(weights) <= {"weight", "bias"}:  # LLaVA's 'linear' projector is a bare nn.Linear (mm_projector.weight)
        weights = {f"0.{k}": v for k, v in weights.items()}
    first = weights.get("0.weight")
    vision_dim = int(config.get("mm_hidden_size") or (first.shape[1] if first is not None else vision.hidden_size))
    projector = build_projector(kind, vision_dim, llm.config.hidden_size, bias="0.bias" in weights)
    try:
        projector.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{pretrained}: projector weights do not fit mm_projector_type={kind!r}: {err}") from err
    projector.to(dtype=llm.dtype)
    _check_fit(vision, projector, pretrained)
    if image_aspect_ratio == "auto":  # LLaVA's process_images: 'pad' pads to a square, anything else does not
        image_aspect_ratio = "pad" if config.get("image_aspect_ratio") == "pad" else "original"
    vlm = LlavaStyleVLM(
        vision,
        projector,
        llm,
        tokenizer,
        image_aspect_ratio=image_aspect_ratio,
        tokenization=FORMAT_TOKENIZATION["original"],
    )
    if config.get("mm_use_im_start_end"):
        missing = [t for t in IM_START_END if t not in tokenizer.get_vocab()]
        if missing:
            raise CheckpointError(
                f"{pretrained}: mm_use_im_start_end is true but the tokenizer of {tok_source} has no {missing}; "
                "use the tokenizer files (added_tokens.json) saved with this checkpoint"
            )
        vlm.prompt_tokenizer.image_wrap = IM_START_END
    return vlm


# LLaVA's DEFAULT_IM_START_TOKEN / DEFAULT_IM_END_TOKEN, written around <image> when mm_use_im_start_end is set
IM_START_END = ("<im_start>", "<im_end>")


def sentencepiece_model_file(source: str) -> Optional[str]:
    """The ``tokenizer.model`` of a local directory or (cached) hub repo, if it has one."""
    local = os.path.expanduser(source)
    if os.path.isdir(local):
        path = os.path.join(local, "tokenizer.model")
        return path if os.path.isfile(path) else None
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(source, "tokenizer.model")
    except Exception:  # no such file in the repo, or no hub: the tokenizer is not SentencePiece here
        return None


def load_original_tokenizer(source: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer an original-format checkpoint was trained with. A SentencePiece ``tokenizer.model``
    is tokenized exactly as ``sentencepiece`` does (LLaVA used the slow, SentencePiece-backed tokenizer),
    checked on probe strings; a broken sentencepiece/protobuf pair is named with its fix."""
    from transformers import AutoTokenizer

    model_file = sentencepiece_model_file(source)
    if model_file is not None:
        problem = sentencepiece_problem()
        if problem:
            raise CheckpointError(f"{model_file} cannot be read: {problem}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as err:
        where = model_file or source
        local = os.path.expanduser(source)
        vocab_files = ("tokenizer.model", "tokenizer.json", "vocab.json", "vocab.txt")
        if os.path.isdir(local) and not any(os.path.isfile(os.path.join(local, f)) for f in vocab_files):
            present = sorted(os.path.basename(f) for f in glob.glob(os.path.join(local, "tokenizer*")))
            raise CheckpointError(
                f"{local} has {present or 'no tokenizer files'} but no vocabulary (tokenizer.model or tokenizer.json); "
                "copy the checkpoint's tokenizer.model again (or remove the tokenizer files so model_base's are used)"
            ) from err
        raise CheckpointError(
            f"the tokenizer of {where} does not load ({type(err).__name__}: {str(err)[:300]}); run `lmms-ac doctor` "
            "to check the tokenizer libraries, or copy the checkpoint's tokenizer files again"
        ) from err
    if model_file is None:
        return tokenizer
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise CheckpointError(
            f"{model_file}: transformers gave a {type(tokenizer).__name__} without a tokenizers backend; lmms-ac needs "
            "transformers' fast tokenizer (pip install -c constraints.txt -e .)"
        )
    match_sentencepiece(tokenizer, model_file)
    bad = sentencepiece_mismatches(tokenizer, model_file)
    if bad:
        text, ours, ref = bad[0]
        raise CheckpointError(
            f"{model_file}: transformers' tokenizer splits {text!r} into {ours} but SentencePiece into {ref} (lmms-ac "
            "reproduces LLaMA-style normalizer settings only); report this file's normalizer_spec"
        )
    return tokenizer
