"""Where a perturbation acts, in the order the model meets it. Torch-free, so ``lmms-ac --help`` can list
them: ``image`` (pixels, before the vision encoder), ``tokens`` (visual tokens after the projector),
``hidden`` (the LLM's hidden states), ``dataset`` (substituted images, e.g. synthetic ones)."""

from __future__ import annotations

from typing import Literal, Tuple, get_args

Stage = Literal["image", "tokens", "hidden", "dataset"]
STAGES: Tuple[str, ...] = get_args(Stage)
