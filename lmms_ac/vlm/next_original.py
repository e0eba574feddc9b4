"""Load original-format LLaVA-NeXT and LLaVA-OneVision checkpoints (the LLaVA / LLaVA-NeXT repositories'
``llava_llama``/``llava_mistral``/``llava_qwen`` code with tiled input), e.g. ``liuhaotian/llava-v1.6-vicuna-7b``
(``image_aspect_ratio: anyres``) and ``lmms-lab/llava-onevision-qwen2-7b-ov`` (``anyres_max_9``).

The weights are the ones the original code runs: the LLM from the checkpoint's shards, the projector from
``model.mm_projector.{0,2}.*`` and the row-end token from ``model.image_newline``. Both releases fine-tuned
their vision tower (``unfreeze_mm_vision_tower`` / ``mm_tunable_parts``) and saved it as
``model.vision_tower.vision_tower.*``: those weights are used, not ``mm_vision_tower``'s (which only gives the
tower's config and image preprocessing, and its weights when the checkpoint has none). They are assembled
into transformers' own ``LlavaNextModel``/``LlavaOnevisionModel`` (the names map as transformers'
``convert_llava_next_weights_to_hf``/``convert_llava_onevision_weights_to_hf`` map them), so tiling,
unpadding, row-end tokens and OneVision's pooling are the llava-hf path's (``lmms_ac.vlm.tiled``) and the same
weights give the same visual tokens in both formats.

* **NeXT** (CLIP): layer ``mm_vision_select_layer``, CLS dropped.
* **OneVision** (SigLIP): the original code deletes the tower's last layer and reads the output of the
  layers that remain (whatever ``mm_vision_select_layer`` says); the checkpoint saves the layers it kept, so
  the tower is built with that many layers and its last hidden state is used (transformers' conversion does
  the same: ``vision_feature_layer: -1``). Pooling follows ``image_aspect_ratio`` (``anyres_max_N``).

One difference is kept on purpose: the original code reads each ``image_grid_pinpoints`` pair as
``(width, height)`` (``select_best_resolution`` gets PIL's ``image.size``), transformers as ``(height,
width)``. The pairs are swapped here, so a tie between a tall and a wide grid (images smaller than a tile)
is broken as the original code breaks it. A string form (``"(1x1),...,(6x6)"``) is expanded as the original
code does (tile counts times the tower's image size).

Refused at load, with the reason: merge types other than ``spatial_unpad``, projectors other than
``mlp2x_gelu``, towers other than CLIP (NeXT) and SigLIP (OneVision), and ``vision_tower=``.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List

import torch
from torch import nn

from lmms_ac.vision.hf import HFVisionTower, load_image_processor
from lmms_ac.vlm.assemble import check_fit
from lmms_ac.vlm.errors import CheckpointError
from lmms_ac.vlm.next_hf import SINGLE_VIEW_FIELDS, single_view_processor
from lmms_ac.vlm.projector import projector_from_llava_hf
from lmms_ac.vlm.tiled import TiledLlavaVLM

# the original names of the pieces LlavaNextModel holds besides the LLM
TOWER_PREFIX = "model.vision_tower.vision_tower."
NEWLINE_KEY = "model.image_newline"


def is_tiled_original(config: Dict[str, Any]) -> bool:
    """True for an original-format config whose image input is tiled (NeXT/OneVision)."""
    aspect = str(config.get("image_aspect_ratio") or "")
    merge = str(config.get("mm_patch_merge_type") or "flat")
    return aspect.startswith("anyres") or merge != "flat"


_ANYRES_MAX = re.compile(r"^anyres_max_(\d+)$")
_PINPOINT_RANGE = re.compile(r"\((\d+)x(\d+)\)")


def tiled_kind(config: Dict[str, Any]) -> str:
    """``llava_next`` (``anyres``) or ``llava_onevision`` (``anyres_max_N``): transformers' model type to run."""
    return "llava_onevision" if _ANYRES_MAX.match(str(config.get("image_aspect_ratio") or "")) else "llava_next"


def check_next_original(config: Dict[str, Any], base_type: str, source: str) -> None:
    """Refuse, from config.json alone, the tiled original checkpoints this path cannot run exactly."""
    aspect = str(config.get("image_aspect_ratio") or "")
    merge = str(config.get("mm_patch_merge_type") or "flat")
    if aspect != "anyres" and not _ANYRES_MAX.match(aspect):
        raise CheckpointError(
            f"{source}: mm_patch_merge_type={merge!r} with image_aspect_ratio={aspect!r}: tiles need "
            "image_aspect_ratio 'anyres' (LLaVA-NeXT) or 'anyres_max_N' (LLaVA-OneVision); fix config.json"
        )
    if merge != "spatial_unpad":
        raise CheckpointError(
            f"{source}: mm_patch_merge_type={merge!r} is not supported on tiled input; the released "
            "'spatial_unpad' (tiles unpadded, an image_newline token closing each row) is"
        )
    kind = config.get("mm_projector_type", "linear")
    if kind != "mlp2x_gelu":
        raise CheckpointError(f"{source}: mm_projector_type={kind!r} on tiled input; only 'mlp2x_gelu' is supported")
    if config.get("mm_vision_select_feature", "patch") != "patch":
        raise CheckpointError(f"{source}: mm_vision_select_feature must be 'patch' on tiled input")
    pinpoints = config.get("image_grid_pinpoints")
    pairs = (
        isinstance(pinpoints, list)
        and pinpoints
        and all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) for v in p) for p in pinpoints)
    )
    if not pairs and not (isinstance(pinpoints, str) and len(_PINPOINT_RANGE.findall(pinpoints)) >= 2):
        raise CheckpointError(
            f"{source}: image_grid_pinpoints={pinpoints!r} is neither a list of [width, height] pairs in pixels "
            "(LLaVA-NeXT writes e.g. [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]) nor a range "
            "like '(1x1),...,(6x6)'"
        )


def original_pinpoints(config: Dict[str, Any], tower_size: int) -> List[List[int]]:
    """The config's ``image_grid_pinpoints`` as ``[width, height]`` pixel pairs; a ``"(1x1),...,(6x6)"`` range is
    expanded as LLaVA-NeXT's code expands it (every tile count in the range, times the tower's image size)."""
    pinpoints = config["image_grid_pinpoints"]
    if not isinstance(pinpoints, str):
        return [[int(w), int(h)] for w, h in pinpoints]
    found = _PINPOINT_RANGE.findall(pinpoints)
    (a0, b0), (a1, b1) = (tuple(map(int, found[0])), tuple(map(int, found[-1])))
    return [[i * tower_size, j * tower_size] for i in range(a0, a1 + 1) for j in range(b0, b1 + 1)]


def transformers_pinpoints(original: List[List[int]]) -> List[List[int]]:
    """Original ``[width, height]`` pairs as transformers' ``[height, width]`` (order kept: ties break alike)."""
    return [[int(h), int(w)] for w, h in original]


def tiling_processor(
    kind: str, tower: str, pinpoints: List[List[int]], image_backend: str, trust_remote_code: bool
) -> Any:
    """transformers' NeXT/OneVision image processor (``image_backend``) with the tower's own resize, crop and
    normalisation, as the original ``process_anyres_image`` runs the tower's processor on each view."""
    import transformers

    base = load_image_processor(tower, image_backend, trust_remote_code).to_dict()
    fields = {k: base[k] for k in SINGLE_VIEW_FIELDS if base.get(k) is not None}
    name = {"llava_next": "LlavaNextImageProcessor", "llava_onevision": "LlavaOnevisionImageProcessor"}[kind]
    cls = getattr(transformers, name + ("Pil" if image_backend == "pil" else ""))
    return cls(**fields, image_grid_pinpoints=transformers_pinpoints(pinpoints), do_pad=True)


# the tower family each original tiled model was released with
_TOWERS = {"llava_next": "clip", "llava_onevision": "siglip"}


def _tower_config(kind: str, tower: str, source: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tower, trust_remote_code=trust_remote_code)
    vision = getattr(config, "vision_config", config)
    family = _TOWERS[kind]
    if not str(getattr(vision, "model_type", "")).startswith(family):
        raise CheckpointError(
            f"{source}: mm_vision_tower {tower!r} is a {getattr(vision, 'model_type', '?')} tower; original-format "
            f"{'LLaVA-NeXT' if kind == 'llava_next' else 'LLaVA-OneVision'} loads with {family} towers only "
            "(as released)"
        )
    return vision


def _saved_layers(tower_state: Dict[str, torch.Tensor]) -> int:
    return len({k.split(".")[2] for k in tower_state if k.startswith("encoder.layers.")})


def _tower_model(
    kind: str, vision_config: Any, tower_state: Dict[str, torch.Tensor], tower: str, pretrained: str, trust: bool
) -> nn.Module:
    """The vision model with the checkpoint's fine-tuned weights (or ``tower``'s when it saved none)."""
    from transformers import CLIPVisionModel, SiglipVisionModel

    cls = CLIPVisionModel if kind == "llava_next" else SiglipVisionModel
    if not tower_state:  # a frozen tower: the original code loads mm_vision_tower (OneVision then cuts a layer)
        model = cls.from_pretrained(tower, trust_remote_code=trust)
        if kind == "llava_onevision":
            del getattr(model, "vision_model", model).encoder.layers[-1:]
            model.config.num_hidden_layers -= 1
        return model
    if kind == "llava_onevision":  # the layers the original code kept, and no pooling head (it set nn.Identity)
        vision_config.num_hidden_layers = _saved_layers(tower_state)
        vision_config.vision_use_head = False
    model = cls(vision_config)
    missing, unexpected = model.load_state_dict(tower_state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise CheckpointError(
            f"{pretrained}: its {TOWER_PREFIX}* weights do not fit the tower of {tower!r} (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); mm_vision_tower names another tower than the one saved"
        )
    return model


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
    import transformers

    kind = tiled_kind(config)
    next_model = kind == "llava_next"
    source = f"{pretrained}/config.json"
    vision_config = _tower_config(kind, tower, source, trust_remote_code)
    # released files say vision_model.embeddings.*; transformers 5's vision models have no vision_model level
    tower_state = {
        k[len(TOWER_PREFIX) :].removeprefix("vision_model."): v
        for k, v in weights.items()
        if k.startswith(TOWER_PREFIX)
    }
    vision_model = _tower_model(kind, vision_config, tower_state, tower, pretrained, trust_remote_code)
    pinpoints = original_pinpoints(config, int(vision_model.config.image_size))
    settings = dict(
        text_config=llm.config.to_dict(),
        vision_config=vision_model.config.to_dict(),
        image_grid_pinpoints=transformers_pinpoints(pinpoints),
        projector_hidden_act="gelu",
    )
    if next_model:
        select_layer = int(config.get("mm_vision_select_layer", -2))
        model_config = transformers.LlavaNextConfig(
            **settings, vision_feature_layer=select_layer, vision_feature_select_strategy="default"
        )
        shell_cls, projector_cls = transformers.LlavaNextModel, "LlavaNextMultiModalProjector"
        module = transformers.models.llava_next.modeling_llava_next
    else:
        select_layer = -1  # the last of the layers kept (see the module docstring)
        model_config = transformers.LlavaOnevisionConfig(
            **settings,
            vision_feature_layer=select_layer,
            vision_feature_select_strategy="full",
            vision_aspect_ratio=str(config["image_aspect_ratio"]),
        )
        shell_cls, projector_cls = transformers.LlavaOnevisionModel, "LlavaOnevisionMultiModalProjector"
        module = transformers.models.llava_onevision.modeling_llava_onevision
    if NEWLINE_KEY not in weights:
        raise CheckpointError(
            f"{pretrained}: mm_patch_merge_type 'spatial_unpad' but no '{NEWLINE_KEY}' weight in its shards; the "
            "checkpoint is incomplete (copy its *.safetensors/*.bin files again)"
        )
    projector = getattr(module, projector_cls)(model_config)
    mm = {k.split("mm_projector.", 1)[1]: v for k, v in weights.items() if "mm_projector." in k}
    linear = {"0": "linear_1", "2": "linear_2"}
    renamed = {linear.get(k.split(".", 1)[0], k) + "." + k.split(".", 1)[1]: v for k, v in mm.items()}
    try:
        projector.load_state_dict(renamed)
    except RuntimeError as err:
        raise CheckpointError(f"{pretrained}: projector weights do not fit mlp2x_gelu: {err}") from err

    dtype = llm.dtype
    with torch.device("meta"):  # transformers' module for its get_image_features; every part replaced below
        shell = shell_cls(model_config)
    shell.vision_tower = vision_model.to(dtype)
    shell.multi_modal_projector = projector.to(dtype)
    shell.image_newline = nn.Parameter(weights[NEWLINE_KEY].to(dtype), requires_grad=False)
    shell.language_model = llm.model
    leftover = [n for n, t in [*shell.named_parameters(), *shell.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"{kind} assembly left tensors unset: {leftover[:5]}")

    image_processor = tiling_processor(kind, tower, pinpoints, image_backend, trust_remote_code)
    vision = HFVisionTower(
        f"{kind.replace('_', '-')}:{os.path.basename(os.path.normpath(pretrained))}",
        shell.vision_tower,
        single_view_processor(image_processor),
        select_layer,
        num_prefix_tokens=1 if next_model else 0,
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
