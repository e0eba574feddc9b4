"""Load a llava-hf LLaVA-NeXT or LLaVA-OneVision checkpoint (``model_type: llava_next``,
``LlavaNextForConditionalGeneration``; ``llava_onevision``, ``LlavaOnevisionForConditionalGeneration``).

Model, processor, tokenizer and chat template all come from the checkpoint; the image input is
the processor's anyres tiling (``lmms_ac.vlm.tiled``). What this path cannot run exactly fails at
load: a multi-layer ``vision_feature_layer``, a strategy/tower pair other than the released ones
(NeXT: ``default`` on CLIP, dropping CLS; OneVision: ``full`` on SigLIP, which has none), so the
packed grid lines up, ``vision_tower=`` (the tiles are sized for the checkpoint's own tower) and
``image_aspect_ratio`` other than ``auto``/``anyres``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from lmms_ac.vision.hf import HFVisionTower, load_image_processor
from lmms_ac.vlm.assemble import causal_lm_around, check_fit
from lmms_ac.vlm.errors import CheckpointError
from lmms_ac.vlm.projector import projector_from_llava_hf
from lmms_ac.vlm.tiled import TiledLlavaVLM

# llava-hf model types this module loads -> the name users know
TILED_HF_TYPES = {"llava_next": "LLaVA-NeXT", "llava_onevision": "LLaVA-OneVision"}
# vision_feature_select_strategy -> the tower family it is released with (CLS dropped / no CLS to drop)
_STRATEGY_TOWERS = {"default": "clip", "full": "siglip"}
# CLIPImageProcessor fields of the NeXT processor: the tower's own single-view preprocessing
SINGLE_VIEW_FIELDS = (
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


def single_view_processor(image_processor: Any) -> Any:
    """A ``CLIPImageProcessor`` (same backend) with the tiling processor's resize, crop and normalisation:
    the tower's plain square view, used where the tower serves as a representation (scores, layers)."""
    import transformers

    pil = getattr(image_processor, "backend", None) == "pil"
    cls = transformers.CLIPImageProcessorPil if pil else transformers.CLIPImageProcessor
    settings = image_processor.to_dict()
    fields = {k: settings[k] for k in SINGLE_VIEW_FIELDS if settings.get(k) is not None}
    fields.setdefault("do_center_crop", False)  # OneVision resizes straight to the square: no crop
    return cls(**fields)


def check_next_config(config: Dict[str, Any], source: str) -> None:
    """Refuse, from config.json alone, what the tiled path cannot run exactly."""
    layer = config.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise CheckpointError(f"{source}: multi-layer vision features {layer} are not supported (LLaVA-NeXT uses -2)")
    strategy = config.get("vision_feature_select_strategy", "default")
    tower_type = str((config.get("vision_config") or {}).get("model_type", "clip_vision_model"))
    if not tower_type.startswith(_STRATEGY_TOWERS.get(strategy, "?")):
        raise CheckpointError(
            f"{source}: vision_feature_select_strategy={strategy!r} on a {tower_type} tower is not supported on "
            "tiled input (the packed grid would not line up); supported as released: 'default' on CLIP (drop CLS, "
            "LLaVA-NeXT), 'full' on SigLIP (no CLS, LLaVA-OneVision)"
        )


def load_llava_next_hf(
    pretrained: str,
    config: Dict[str, Any],
    vision_tower: Optional[str],
    torch_dtype: Any,
    attn_implementation: Optional[str],
    image_aspect_ratio: str,
    trust_remote_code: bool,
    image_backend: Optional[str] = None,
) -> TiledLlavaVLM:
    """``LlavaNextForConditionalGeneration``/``LlavaOnevisionForConditionalGeneration`` + its processor as a
    ``TiledLlavaVLM``."""
    import transformers
    from transformers import AutoProcessor

    source = f"{pretrained}/config.json"
    check_next_config(config, source)
    name = TILED_HF_TYPES[config["model_type"]]
    if vision_tower:
        raise CheckpointError(
            f"{source}: vision_tower= cannot replace a {name} tower (its tiles and row-end token are sized for the "
            "checkpoint's own tower); leave vision_tower unset"
        )
    if image_aspect_ratio not in ("auto", "anyres"):
        raise CheckpointError(
            f"{source}: image_aspect_ratio={image_aspect_ratio!r} on a {name} checkpoint; its input is the anyres "
            "tiling it was trained on (image_aspect_ratio=auto or anyres)"
        )
    kwargs = dict(dtype=torch_dtype, trust_remote_code=trust_remote_code)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model_cls = {
        "llava_next": transformers.LlavaNextForConditionalGeneration,
        "llava_onevision": transformers.LlavaOnevisionForConditionalGeneration,
    }[config["model_type"]]
    model = model_cls.from_pretrained(pretrained, **kwargs)
    processor = AutoProcessor.from_pretrained(pretrained, trust_remote_code=trust_remote_code)
    image_processor = processor.image_processor
    if image_backend:  # the same processor config through the other implementation
        image_processor = load_image_processor(pretrained, image_backend, trust_remote_code)
    vision = HFVisionTower(
        f"llava-hf:{pretrained}",
        model.model.vision_tower,
        single_view_processor(image_processor),
        int(model.config.vision_feature_layer),
        num_prefix_tokens=1 if model.config.vision_feature_select_strategy == "default" else 0,
    )
    projector = projector_from_llava_hf(model.model.multi_modal_projector)
    check_fit(vision, projector, pretrained)
    llm = causal_lm_around(model.config.text_config, model.model.language_model, model.lm_head)
    llm.generation_config = model.generation_config
    tokenizer = processor.tokenizer
    if getattr(processor, "chat_template", None) and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = processor.chat_template
    return TiledLlavaVLM(
        vision,
        projector,
        llm,
        tokenizer,
        image_processor=image_processor,
        image_features=model.model,
        image_token=getattr(processor, "image_token", "<image>"),
    )
