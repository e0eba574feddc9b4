"""Per-sample hook points where perturbations reach inside the model.

* ``image``  - ``(pixels [3, S, S] in [0, 1], image_index) -> pixels``: after the encoder's
  resize/crop, before normalisation. On tiled input (LLaVA-NeXT/OneVision) it gets the whole image
  before tiling, ``[3, H, W]``; a hook marked ``per_view`` (PatchDrop) gets each image's views instead,
  ``[V, 3, S, S]`` (see ``TiledLlavaVLM.hook_views``).
* ``tokens`` - ``(tokens [N, D_llm], image_index) -> tokens [N', D_llm]``: one image's visual
  tokens after the projector, before the LLM (N' may differ from N). On tiled input (LLaVA-NeXT) it
  is called ``(tokens, image_index, views)`` with ``views`` long ``[N]``: the view of each token (0 =
  base view, k = tile k, -1 = a row-end token); see ``LlavaStyleVLM.apply_token_hook``.
* ``hidden`` - ``(hidden [T, D_llm], visual_mask [T] bool) -> hidden`` at LLM layer
  ``hidden_layer`` L: the hidden state entering decoder block L (transformers' ``hidden_states[L]``;
  0 = the input embeddings), applied to the prompt positions (the prefill pass) of that sample only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

ImageHook = Callable[[torch.Tensor, int], torch.Tensor]
TokenHook = Callable[[torch.Tensor, int], torch.Tensor]
HiddenHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SampleHooks:
    image: Optional[ImageHook] = None
    tokens: Optional[TokenHook] = None
    hidden: Optional[HiddenHook] = None
    hidden_layer: int = 0

    def __post_init__(self) -> None:
        if self.hidden is not None and self.hidden_layer < 0:
            raise ValueError(f"hidden_layer must be >= 0 (0 = input embeddings), got {self.hidden_layer}")
