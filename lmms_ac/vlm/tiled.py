"""LLaVA-NeXT's tiled ("anyres") image input on a ``LlavaStyleVLM``.

Each image becomes a base view (the whole image resized to the tower's square) plus the tiles of
the image resized and padded to its best ``image_grid_pinpoints`` resolution (the checkpoint's
``LlavaNextImageProcessor`` does this, exactly as for transformers' model). The views go through
the tower and the projector together; transformers' own ``LlavaNextModel.get_image_features`` then
selects the layer, drops CLS, projects, and packs each image's tokens as
``[base view | tiled grid, unpadded, one image_newline token closing each row]`` (its
``pack_image_features``, ``unpad_image`` and ``get_anyres_image_grid_shape``). Reusing these
functions rather than re-writing them keeps the token count and order identical to transformers'
``LlavaNextForConditionalGeneration`` by construction, for every size and pinpoint list.

The number of visual tokens therefore depends on each image's size; the splice, the batch builder
and the prefix runner take one tensor per image of its own length.

Perturbations at the pixel and token stages are defined on a single square grid; on tiled input
they are refused (``TILED_STAGE_REFUSAL``) instead of being applied to the wrong layout.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
from PIL import Image
from torch import nn

from lmms_ac.vision.base import VisionRepresentation
from lmms_ac.vlm.hooks import SampleHooks
from lmms_ac.vlm.images import check_image
from lmms_ac.vlm.model import LlavaStyleVLM

TILED_STAGE_REFUSAL = (
    "is not defined on LLaVA-NeXT's tiled input yet (base view + tiles + row-end newline tokens); "
    "image- and token-stage probes are refused on this checkpoint rather than applied to the wrong layout. "
    "Hidden-state probes (layernoise, modnoise) and dataset probes (synthetic) run"
)


class TiledLlavaVLM(LlavaStyleVLM):
    """A ``LlavaStyleVLM`` whose images are encoded by LLaVA-NeXT's tiling (``image_aspect_ratio`` ``anyres``).

    ``vision`` and ``projector`` are the checkpoint's own modules (the tower as a single-view
    representation for scores and layers); ``image_features`` is the checkpoint's ``LlavaNextModel``,
    used for its ``get_image_features`` (it shares those modules and holds ``image_newline``)."""

    def __init__(
        self,
        vision: VisionRepresentation,
        projector: nn.Module,
        llm: nn.Module,
        tokenizer: Any,
        image_processor: Any,
        image_features: nn.Module,
        image_token: str = "<image>",
        tokenization: str = "joint",
    ):
        super().__init__(
            vision,
            projector,
            llm,
            tokenizer,
            image_aspect_ratio="original",
            image_token=image_token,
            tokenization=tokenization,
        )
        self.image_aspect_ratio = "anyres"
        self.image_processor = image_processor
        self.image_newline = image_features.image_newline  # registered here so .to() moves it (same Parameter)
        # kept out of the module tree: its tower, projector and LLM are registered above already
        self.feature_source = (image_features,)
        self.grid_pinpoints = [list(p) for p in image_features.config.image_grid_pinpoints]

    @torch.no_grad()
    def encode_images(
        self,
        images: Sequence[Image.Image],
        hooks: Sequence[Optional[SampleHooks]] = (),
        image_indices: Sequence[int] = (),
    ) -> List[torch.Tensor]:
        """One ``[N_i, D_llm]`` tensor per image: base view, unpadded tiles with row-end newlines."""
        if not images:
            return []
        for h in hooks:
            if h is not None and (h.image is not None or h.tokens is not None):
                raise ValueError(f"a pixel or token perturbation {TILED_STAGE_REFUSAL}")
        inputs = self.image_processor(images=[check_image(im) for im in images], return_tensors="pt")
        (model,) = self.feature_source
        out = model.get_image_features(
            pixel_values=inputs["pixel_values"].to(self.vision.device, self.vision.dtype),
            image_sizes=inputs["image_sizes"].to(self.vision.device),
            return_dict=True,
        )
        return [t.to(self.device, self.dtype) for t in out.pooler_output]
