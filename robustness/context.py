"""Where a perturbation is applied: the request (task, doc_id), the seed, and the encoder geometry.

Randomness never comes from a global RNG. Every stochastic op draws from ``ctx.generator()``, a
``torch.Generator`` seeded from a stable hash (SHA-256, independent of ``PYTHONHASHSEED``, the
process, the rank and the device) of ``(seed, task, doc_id, image_index)``. Random numbers are drawn
on the CPU and then moved to the tensor's device, so a perturbation is bit-identical on every
data-parallel rank and on CPU or GPU. Importing this module does not import torch (the grammar builds
contexts); ``generator()`` does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Tuple, Union

if TYPE_CHECKING:
    import torch

_SEED_NAMESPACE = "lmms_ac.robustness/v1"


def stable_seed(seed: int, task: str, doc_id: Union[int, str], image_index: int = 0, view: int = 0) -> int:
    """A 63-bit seed from ``(seed, task, doc_id, image_index, view)``; the same in every process. ``view`` 0
    (the base view of a tiled image, and the one view of a square one) gives the seed of the image itself."""
    parts = [_SEED_NAMESPACE, str(int(seed)), str(task), str(doc_id), str(int(image_index))]
    if int(view) != 0:  # tile k of a tiled image: a seed of its own
        parts.append(f"view={int(view)}")
    key = "\x1f".join(parts)
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


@dataclass(frozen=True)
class PerturbationContext:
    """One application of a perturbation.

    ``grid`` is the encoder's token grid ``(gh, gw)`` and ``patch_size`` its patch size in pixels of
    the square encoder input. ``image_index`` tells the images of one multi-image request apart.
    ``visual_mask`` (bool):

    * stage ``"hidden"``: ``[T]``, True at the visual-token positions of the sample (required by
      modality noise);
    * stage ``"tokens"``: optional ``[N]``, True at the patch tokens; False rows (newline/separator
      tokens) stay where they are. Without it every row is a patch token and ``N == gh * gw``.

    ``views`` (long ``[N]``, stage ``"tokens"``, tiled input such as LLaVA-NeXT's only): the view each
    token belongs to (0 = the base view, k = tile k), -1 at row-end tokens, which stay in place.

    ``view`` (stage ``"image"`` on tiled input: PatchDrop per view): which view of the image the pixels
    are, 0 = the base view (and the one view of a square image), k = tile k. It is part of the seed
    for k > 0, so each tile draws its own cells; view 0 draws what the image draws on one grid.
    """

    task: str
    doc_id: int
    seed: int
    grid: Tuple[int, int]
    patch_size: int
    image_index: int = 0
    visual_mask: Optional[torch.Tensor] = field(default=None, compare=False, hash=False, repr=False)
    views: Optional[torch.Tensor] = field(default=None, compare=False, hash=False, repr=False)
    view: int = 0

    @property
    def num_patches(self) -> int:
        return int(self.grid[0]) * int(self.grid[1])

    def stable_seed(self) -> int:
        return stable_seed(self.seed, self.task, self.doc_id, self.image_index, self.view)

    def generator(self, device: Union[str, torch.device] = "cpu") -> torch.Generator:
        """A fresh generator seeded from ``(seed, task, doc_id, image_index, view)``.

        The ops of this package always call it with the default CPU device (see module docstring).
        """
        import torch  # here, not at the top: the grammar (parsing, names) stays torch-free

        gen = torch.Generator(device=device)
        gen.manual_seed(self.stable_seed())
        return gen
