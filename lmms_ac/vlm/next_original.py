"""Load an original-format LLaVA-NeXT checkpoint (LLaVA's ``llava_llama``/``llava_mistral`` code with
``image_aspect_ratio: anyres`` and ``mm_patch_merge_type: spatial_unpad``, e.g. ``liuhaotian/llava-v1.6-vicuna-7b``).

The weights are the ones the original code runs: the LLM from the checkpoint's shards, the projector from
``model.mm_projector.{0,2}.*`` and the row-end token from ``model.image_newline``. LLaVA-1.6 fine-tuned its
vision tower (``unfreeze_mm_vision_tower: true``) and saved it as ``model.vision_tower.vision_tower.*``: those
weights are used, not ``mm_vision_tower``'s (which only gives the tower's config and image preprocessing, and
its weights when the checkpoint has none). They are assembled into transformers' own ``LlavaNextModel`` (the
names map as transformers' ``convert_llava_next_weights_to_hf`` maps them), so tiling, unpadding and row-end
tokens are the llava-hf path's (``lmms_ac.vlm.tiled``) and the same weights give the same visual tokens in
both formats.

One difference is kept on purpose: the original code reads each ``image_grid_pinpoints`` pair as
``(width, height)`` (``select_best_resolution`` gets PIL's ``image.size``), transformers as ``(height,
width)``. The pairs are swapped here, so a tie between a tall and a wide grid (images smaller than a tile)
is broken as LLaVA-NeXT breaks it; a converted llava-hf checkpoint that kept the list as written tiles such
images the other way.

Refused at load, with the reason: OneVision's original format (``anyres_max_N``, ``llava_qwen``: its SigLIP
tower is cut by one layer and pooled, use ``llava-hf/llava-onevision-*-hf``), merge types other than
``spatial_unpad``, projectors other than ``mlp2x_gelu``, towers other than CLIP, and ``vision_tower=``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

import torch
from torch import nn

from lmms_ac.vision.hf import HFVisionTower, load_image_processor
from lmms_ac.vlm.assemble import check_fit
from lmms_ac.vlm.errors import CheckpointError
from lmms_ac.vlm.next_hf import single_view_processor
from lmms_ac.vlm.projector import projector_from_llava_hf
from lmms_ac.vlm.tiled import TiledLlavaVLM

# the original names of the pieces LlavaNextModel holds besides the LLM
TOWER_PREFIX = "model.vision_tower.vision_tower."
NEWLINE_KEY = "model.image_newline"
# CLIPImageProcessor fields the tiling processor takes over from the tower's preprocessor_config.json
_TOWER_PREPROCESSING = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
)


def is_tiled_original(config: Dict[str, Any]) -> bool:
    """True for an original-format config whose image input is tiled (NeXT/OneVision)."""
    aspect = str(config.get("image_aspect_ratio") or "")
    merge = str(config.get("mm_patch_merge_type") or "flat")
    return aspect.startswith("anyres") or merge != "flat"


def check_next_original(config: Dict[str, Any], base_type: str, source: str) -> None:
    """Refuse, from config.json alone, the tiled original checkpoints this path cannot run exactly."""
    aspect = str(config.get("image_aspect_ratio") or "")
    merge = str(config.get("mm_patch_merge_type") or "flat")
    if aspect.startswith("anyres_max") or base_type == "qwen2":
        raise CheckpointError(
            f"{source}: image_aspect_ratio={aspect!r} on a {base_type} LLM is original-format LLaVA-OneVision, which "
            "lmms_ac_llava does not load (its SigLIP tower is cut by one layer and its grid pooled); use the llava-hf "
            "release (llava-hf/llava-onevision-qwen2-7b-ov-hf) or convert it with transformers' "
            "convert_llava_onevision_weights_to_hf"
        )
    if aspect != "anyres":
        raise CheckpointError(
            f"{source}: mm_patch_merge_type={merge!r} with image_aspect_ratio={aspect!r}: tiles need "
            "image_aspect_ratio 'anyres' (LLaVA-NeXT); fix config.json or pass image_aspect_ratio= explicitly"
        )
    if merge != "spatial_unpad":
        raise CheckpointError(
            f"{source}: mm_patch_merge_type={merge!r} is not supported on tiled input; LLaVA-NeXT's released "
            "'spatial_unpad' (tiles unpadded, an image_newline token closing each row) is"
        )
    kind = config.get("mm_projector_type", "linear")
    if kind != "mlp2x_gelu":
        raise CheckpointError(f"{source}: mm_projector_type={kind!r} on LLaVA-NeXT; only 'mlp2x_gelu' is supported")
    if config.get("mm_vision_select_feature", "patch") != "patch":
        raise CheckpointError(f"{source}: mm_vision_select_feature must be 'patch' (drop CLS) on LLaVA-NeXT")
    pinpoints = config.get("image_grid_pinpoints")
    if not (
        isinstance(pinpoints, list)
        and pinpoints
        and all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) for v in p) for p in pinpoints)
    ):
        raise CheckpointError(
            f"{source}: image_grid_pinpoints={pinpoints!r} is not a list of [width, height] pairs in pixels "
            "(LLaVA-NeXT writes e.g. [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]])"
        )


def transformers_pinpoints(original: List[List[int]]) -> List[List[int]]:
    """Original ``[width, height]`` pairs as transformers' ``[height, width]`` (order kept: ties break alike)."""
    return [[int(h), int(w)] for w, h in original]


def tiling_processor(tower: str, pinpoints: List[List[int]], image_backend: str, trust_remote_code: bool) -> Any:
    """A ``LlavaNextImageProcessor`` (``image_backend``) with the tower's own resize, crop and normalisation,
    as LLaVA-NeXT's ``process_anyres_image`` runs the tower's ``CLIPImageProcessor`` on each view."""
    import transformers

    base = load_image_processor(tower, image_backend, trust_remote_code).to_dict()
    fields = {k: base[k] for k in _TOWER_PREPROCESSING if base.get(k) is not None}
    cls = transformers.LlavaNextImageProcessorPil if image_backend == "pil" else transformers.LlavaNextImageProcessor
    return cls(**fields, image_grid_pinpoints=transformers_pinpoints(pinpoints), do_pad=True)


def _tower_config(tower: str, source: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tower, trust_remote_code=trust_remote_code)
    vision = getattr(config, "vision_config", config)
    if not str(getattr(vision, "model_type", "")).startswith("clip"):
        raise CheckpointError(
            f"{source}: mm_vision_tower {tower!r} is a {getattr(vision, 'model_type', '?')} tower; original-format "
            "LLaVA-NeXT loads with CLIP towers only (as released)"
        )
    return vision


def build_next_original(
    pretrained: str,
    config: Dict[str, Any],
    llm: nn.Module,
    tokenizer: Any,
    weights: Dict[str, torch.Tensor],
    tower: str,
    image_backend: str,
    trust_remote_code: bool,
    tokenization: str,
) -> TiledLlavaVLM:
    """The checkpoint as a ``TiledLlavaVLM``. ``weights``: its ``model.mm_projector.*``, ``model.image_newline``
    and (when saved) ``model.vision_tower.vision_tower.*`` tensors; ``tower``: ``mm_vision_tower`` (hub id or
    folder) for the tower's config, preprocessing and, when the checkpoint has no tower weights, its weights."""
    from transformers import CLIPVisionModel, LlavaNextConfig, LlavaNextModel
    from transformers.models.llava_next.modeling_llava_next import LlavaNextMultiModalProjector

    source = f"{pretrained}/config.json"
    vision_config = _tower_config(tower, source, trust_remote_code)
    select_layer = int(config.get("mm_vision_select_layer", -2))
    next_config = LlavaNextConfig(
        text_config=llm.config.to_dict(),
        vision_config=vision_config.to_dict(),
        image_grid_pinpoints=transformers_pinpoints(config["image_grid_pinpoints"]),
        vision_feature_layer=select_layer,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    # released files say vision_model.embeddings.*; transformers 5's CLIPVisionModel has no vision_model level
    tower_state = {
        k[len(TOWER_PREFIX) :].removeprefix("vision_model."): v
        for k, v in weights.items()
        if k.startswith(TOWER_PREFIX)
    }
    if tower_state:  # the fine-tuned tower saved with the checkpoint (LLaVA-1.6)
        vision_model = CLIPVisionModel(next_config.vision_config)
        missing, unexpected = vision_model.load_state_dict(tower_state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise CheckpointError(
                f"{pretrained}: its {TOWER_PREFIX}* weights do not fit the CLIP tower of {tower!r} (missing "
                f"{missing[:3]}, unexpected {unexpected[:3]}); mm_vision_tower names another tower than the one saved"
            )
    else:  # a frozen tower: LLaVA loads it from mm_vision_tower
        vision_model = CLIPVisionModel.from_pretrained(tower, trust_remote_code=trust_remote_code)
    if NEWLINE_KEY not in weights:
        raise CheckpointError(
            f"{pretrained}: mm_patch_merge_type 'spatial_unpad' but no '{NEWLINE_KEY}' weight in its shards; the "
            "checkpoint is incomplete (copy its *.safetensors/*.bin files again)"
        )
    projector = LlavaNextMultiModalProjector(next_config)
    mm = {k.split("mm_projector.", 1)[1]: v for k, v in weights.items() if "mm_projector." in k}
    renamed = {
        {"0": "linear_1", "2": "linear_2"}.get(k.split(".", 1)[0], k) + "." + k.split(".", 1)[1]: v
        for k, v in mm.items()
    }
    try:
        projector.load_state_dict(renamed)
    except RuntimeError as err:
        raise CheckpointError(f"{pretrained}: projector weights do not fit mlp2x_gelu: {err}") from err

    dtype = llm.dtype
    with torch.device("meta"):  # transformers' module for its get_image_features; every part replaced below
        shell = LlavaNextModel(next_config)
    shell.vision_tower = vision_model.to(dtype)
    shell.multi_modal_projector = projector.to(dtype)
    shell.image_newline = nn.Parameter(weights[NEWLINE_KEY].to(dtype), requires_grad=False)
    shell.language_model = llm.model
    leftover = [n for n, t in [*shell.named_parameters(), *shell.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"LLaVA-NeXT assembly left tensors unset: {leftover[:5]}")

    image_processor = tiling_processor(tower, config["image_grid_pinpoints"], image_backend, trust_remote_code)
    vision = HFVisionTower(
        f"llava-next:{os.path.basename(os.path.normpath(pretrained))}",
        shell.vision_tower,
        single_view_processor(image_processor),
        select_layer,
        num_prefix_tokens=1,
    )
    mlp = projector_from_llava_hf(shell.multi_modal_projector)
    check_fit(vision, mlp, pretrained)
    return TiledLlavaVLM(
        vision,
        mlp,
        llm,
        tokenizer,
        image_processor=image_processor,
        image_features=shell,
        tokenization=tokenization,
    )


def wanted_keys(key: str) -> bool:
    """The weights ``build_next_original`` reads from the shards (everything but the LLM)."""
    return key.startswith(TOWER_PREFIX) or key == NEWLINE_KEY or "mm_projector." in key
