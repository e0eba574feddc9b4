"""LLaVA-NeXT's and LLaVA-OneVision's tiled ("anyres") image input on a ``LlavaStyleVLM``.

Each image becomes a base view (the whole image resized to the tower's square) plus the tiles of
the image resized and padded to its best ``image_grid_pinpoints`` resolution (the checkpoint's
``LlavaNextImageProcessor`` does this, exactly as for transformers' model). The views go through
the tower and the projector together; transformers' own ``LlavaNextModel.get_image_features`` then
selects the layer, drops CLS, projects, and packs each image's tokens as
``[base view | tiled grid, unpadded, one image_newline token closing each row]`` (its
``pack_image_features``, ``unpad_image`` and ``get_anyres_image_grid_shape``). Reusing these
functions rather than re-writing them keeps the token count and order identical to transformers'
``LlavaNextForConditionalGeneration`` by construction, for every size and pinpoint list.

OneVision (``LlavaOnevisionModel.get_image_features``) packs the same way, then pools: when the
unpadded grid holds more than ``anyres_max_9``'s 9 tiles' worth of tokens by over 10% it is
downsampled bilinearly to about that many. OneVision encodes each image of a multi-image prompt as
one view, the image padded to a square with the processor's mean colour, followed by one
``image_newline`` (transformers' ``batch_num_images`` rule), so the same image has another encoding
there (``base_view_only``; the prefix runner caches it under its own key).

The number of visual tokens therefore depends on each image's size; the splice, the batch builder
and the prefix runner take one tensor per image of its own length.

A view is one tower-sized square the tower encodes: the base view or one tile. Token probes act on the
views: ``token_views`` labels each visual token with its view (0 = base view, k = tile k, -1 = a row-end
``image_newline`` token), computed by running the same ``pack_image_features`` on view labels instead
of features, so it cannot drift from the real layout (after OneVision's pooling a token mixes
neighbouring tiles: the pooled grid is then one view, 1); token hooks receive these labels
(``LlavaStyleVLM.apply_token_hook``). ``tokperm`` permutes within each view; ``tokperm_global``
permutes every labelled token together, across views, -1 rows in place.

Pixel hooks act in one of two places. By default on the whole image before tiling: ``[3, H, W]`` in
[0, 1] at the image's own size, after the RGB conversion the processor does (transformers'
``convert_to_rgb``), brought back to 8 bits (exact for patch shuffle, which only moves pixels). A hook
marked ``per_view`` (PatchDrop's, from ``lmms_ac.perturb_bridge``) acts on each image's views instead:
``[V, 3, S, S]`` in [0, 1], the processor's output un-normalised (``hook_views``), so each view loses its
own cells of its own patch grid, as LLaVA-1.5's one square view does; on OneVision this is before
pooling, so it is well defined there too.

Token groups and group noise (``tokgroup``, ``toknoise``) split each view's own rectangle of tokens
(the base view's ``gh x gw``, a tile's unpadded part, OneVision's pooled grid) m x m and take group g
of every view together (``robustness.token_ops.view_group_rows``); row-end tokens are kept and never
noised. A probe that does not declare how it acts on the views (``on_tiles``, e.g. a plugin's) is
refused (``TILED_STAGE_REFUSAL``) instead of being applied to the wrong layout.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch import nn

from lmms_ac.vision.base import VisionRepresentation
from lmms_ac.vlm.hooks import SampleHooks
from lmms_ac.vlm.images import check_image
from lmms_ac.vlm.model import LlavaStyleVLM

TILED_STAGE_REFUSAL = (
    "is not defined on LLaVA-NeXT's/OneVision's tiled input (base view + tiles + row-end newline tokens): it does "
    "not say how it acts on the views (a probe class sets on_tiles = True when it does), so it is refused on this "
    "checkpoint rather than applied to the wrong layout. Patch shuffle (on the image before tiling), PatchDrop (per "
    "view: pdrop_random, pdrop_salient, pdrop_nonsalient), token permutation (tokperm within each view, "
    "tokperm_global across views), token groups and group noise (tokgroup, toknoise: per view), hidden-state probes "
    "(layernoise, modnoise) and dataset probes (synthetic) run"
)


def before_tiling(hook: Any, image: Image.Image, image_index: int) -> Image.Image:
    """``hook`` (an image hook) on the whole image before tiling: RGB as the processor converts it, ``[3, H, W]``
    in [0, 1], back to 8-bit RGB."""
    import numpy as np
    from transformers.image_transforms import convert_to_rgb

    rgb = np.asarray(convert_to_rgb(check_image(image), return_numpy=True), dtype=np.uint8)
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
    y = hook(x, image_index)
    out = (y.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(out)  # H x W x 3 uint8: RGB


class TiledLlavaVLM(LlavaStyleVLM):
    """A ``LlavaStyleVLM`` whose images are encoded by LLaVA-NeXT's/OneVision's tiling (``image_aspect_ratio``
    ``anyres``).

    ``vision`` and ``projector`` are the checkpoint's own modules (the tower as a single-view
    representation for scores and layers); ``image_features`` is the checkpoint's ``LlavaNextModel`` or
    ``LlavaOnevisionModel``, used for its ``get_image_features`` (it shares those modules and holds
    ``image_newline``)."""

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
        self.kind = str(image_features.config.model_type)  # llava_next | llava_onevision

    def base_view_only(self, n_images: int) -> bool:
        """OneVision encodes each image of a multi-image prompt as its base view alone (+ one newline)."""
        return self.kind == "llava_onevision" and n_images > 1

    @torch.no_grad()
    def encode_images(
        self,
        images: Sequence[Image.Image],
        hooks: Sequence[Optional[SampleHooks]] = (),
        image_indices: Sequence[int] = (),
        alone: Sequence[bool] = (),
    ) -> List[torch.Tensor]:
        """One ``[N_i, D_llm]`` tensor per image: base view, unpadded tiles with row-end newlines; an image
        marked ``alone`` (OneVision, several images in its prompt): base view and one newline token."""
        if not images:
            return []
        hooks = list(hooks) or [None] * len(images)
        image_indices = list(image_indices) or list(range(len(images)))
        alone = list(alone) or [False] * len(images)
        on_views = [h is not None and h.image is not None and bool(getattr(h.image, "per_view", False)) for h in hooks]
        pixels = [
            check_image(im) if h is None or h.image is None or v else before_tiling(h.image, im, j)
            for h, im, j, v in zip(hooks, images, image_indices, on_views)
        ]
        tokens: List[Optional[torch.Tensor]] = [None] * len(images)
        for flag in (False, True):
            group = [b for b in range(len(images)) if alone[b] == flag]
            if not group:
                continue
            pixel_values, sizes = self._views([pixels[b] for b in group], flag)
            for k, b in enumerate(group):
                if on_views[b]:
                    n = 1 if flag else self.num_views(tuple(int(v) for v in sizes[k]))
                    pixel_values[k, :n] = self.hook_views(hooks[b].image, pixel_values[k, :n], image_indices[b])
            for b, t in zip(group, self._features(pixel_values, sizes, flag)):
                tokens[b] = t.to(self.device, self.dtype)
        return [
            self.apply_token_hook(h, t, j, im, a) for h, t, j, im, a in zip(hooks, tokens, image_indices, images, alone)
        ]

    def _views(self, pixels: List[Image.Image], alone: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """The processor's views ``[B, V, 3, S, S]`` and image sizes of ``pixels``. ``alone``: passed as the images
        of one prompt, so OneVision's processor pads each to a square with its mean colour instead of tiling
        (transformers' rule for a prompt with several images; a single one is passed twice, its copy dropped)."""
        if not alone:
            inputs = self.image_processor(images=pixels, return_tensors="pt")
        else:
            inputs = self.image_processor(images=[pixels if len(pixels) > 1 else pixels * 2], return_tensors="pt")
        n = len(pixels)
        return inputs["pixel_values"][:n].clone(), inputs["image_sizes"][:n]

    def _features(self, pixel_values: torch.Tensor, sizes: torch.Tensor, alone: bool) -> List[torch.Tensor]:
        """transformers' ``get_image_features``; ``alone``: each image as its one (square-padded) view, which
        transformers does for an image whose prompt holds several (``batch_num_images`` > 1)."""
        (model,) = self.feature_source
        index = list(range(len(pixel_values)))
        if alone and len(index) == 1:
            index = index * 2
        extra = {"batch_num_images": torch.tensor([len(index)])} if alone else {}
        out = model.get_image_features(
            pixel_values=pixel_values[index].to(self.vision.device, self.vision.dtype),
            image_sizes=sizes[index].to(self.vision.device),
            return_dict=True,
            **extra,
        )
        return list(out.pooler_output)[: len(pixel_values)]

    def num_views(self, size: Tuple[int, int]) -> int:
        """How many views (base view + tiles) the processor cuts from an image of ``size`` = (height, width)."""
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        (model,) = self.feature_source
        return int(image_size_to_num_patches(size, self.grid_pinpoints, model.config.vision_config.image_size))

    def hook_views(self, hook: Any, pixel_values: torch.Tensor, image_index: int) -> torch.Tensor:
        """A per-view pixel hook (PatchDrop) on one image's views ``[V, 3, S, S]`` as the processor normalised them.

        The hook sees the views in [0, 1], before normalisation, as the LLaVA-1.5 path's image hook sees its one
        view: here they are un-normalised with the processor's ``image_mean``/``image_std`` (resize, padding and
        tiling stay as the processor did them: the views are exactly what the tower gets).
        Only the pixels the hook changed are normalised again (a zeroed pixel becomes ``-mean / std``, what the
        processor gives a black pixel); the others keep the processor's values bit for bit, so a hook that
        changes nothing changes nothing. (Running the processor without normalisation and normalising here
        would round the untouched pixels differently from transformers' model given the same image.) The
        un-normalised views equal the 8-bit pixels / 255 up to float rounding (~1e-7), which is what the
        saliency model of Salient/Non-Salient PatchDrop sees."""
        processor = self.image_processor
        if getattr(processor, "do_normalize", True):
            mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
            std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        else:
            mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
        normalised = pixel_values.float()
        x = normalised * std + mean
        y = hook(x, image_index)
        if y.shape != x.shape:
            raise ValueError(f"a per-view pixel hook returned shape {tuple(y.shape)} for views {tuple(x.shape)}")
        return torch.where(y != x, (y - mean) / std, normalised).to(pixel_values.dtype)

    def token_views(self, image: Image.Image, alone: bool = False) -> torch.Tensor:
        """Long ``[N]``: the view of each of ``image``'s visual tokens (0 = base view, k = tile k, -1 = row end),
        from transformers' own packing run on view labels (so it follows every size and pinpoint list);
        ``alone``: the base view and its one newline."""
        (model,) = self.feature_source
        size = (check_image(image).height, image.width)
        tower = model.config.vision_config
        per_view = (tower.image_size // tower.patch_size) ** 2
        if alone:
            return torch.cat([torch.zeros(per_view, dtype=torch.long), torch.tensor([-1])])
        n_views = self.num_views(size)
        labels = torch.arange(n_views, dtype=torch.float32)[:, None, None].expand(n_views, per_view, 1)
        newline = torch.tensor([-1.0])
        if self.kind != "llava_onevision":
            packed, _ = model.pack_image_features([labels], torch.tensor([size]), "default", image_newline=newline)
            return packed[0][:, 0].round().long()
        pooled, _ = model.pack_image_features([labels], torch.tensor([size]), newline, model.config.vision_aspect_ratio)
        unpooled, _ = model.pack_image_features([labels], torch.tensor([size]), newline, "anyres_max_1000000")
        views = pooled[0][:, 0]
        if len(views) == len(unpooled[0]):  # not pooled: every token is one tile's
            return views.round().long()
        index = torch.arange(len(views))
        return torch.where(views < 0, -1, torch.where(index < per_view, 0, 1)).long()
