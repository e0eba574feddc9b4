"""The perturbation catalogue: one registry ``PERTURBATIONS`` (name -> class) and the string forms.

=================  =======  ==================================  =============================
name               stage    string form (seed 0; else ``_sK``)  parameters
=================  =======  ==================================  =============================
patchshuffle       image    ``patchshuffle4``                   n (tiles per side)
pdrop_random       image    ``pdrop_random50``                  ratio (percent in the form)
pdrop_salient      image    ``pdrop_salient30[_count]``         ratio, by = mass | count
pdrop_nonsalient   image    ``pdrop_nonsalient30[_count]``      ratio, by = mass | count
synthetic          dataset  ``synthetic``                       (none; the task swaps images)
tokperm            tokens   ``tokperm``                         (none)
tokperm_global     tokens   ``tokperm_global``                  (none)
tokgroup           tokens   ``tokgroup_m4_g5``                  m (m x m groups), group
toknoise           tokens   ``toknoise_m4_g5``                  m, group
layernoise         hidden   ``layernoise_l12``                  layer
modnoise           hidden   ``modnoise_image_l0``               modality = image | text, layer
=================  =======  ==================================  =============================

How a caller applies ``p`` (``ctx = p.context(task, doc_id, grid, patch_size, ...)``):

* ``image``: ``p(pixels [3, S, S] in [0, 1], ctx)`` after the encoder's resize/crop, before
  normalisation (on tiled input PatchDrop runs once per view, ``ctx.view`` = 0 for the base view and
  k for tile k, and patch shuffle on the whole image before tiling);
* ``tokens``: ``p(tokens [N, D], ctx)`` on one image's projector output (may return fewer rows);
* ``hidden``: ``p(h [T, D], ctx)`` with ``ctx.visual_mask [T]`` on one sample's hidden state that
  ENTERS decoder block ``p.layer`` (Hugging Face ``hidden_states[p.layer]``; layer 0 = the input
  embeddings, i.e. the projector output at the visual positions);
* ``dataset``: a marker; the task substitutes the regenerated image, ``apply`` is the identity.

PatchDrop's ratio r is always the fraction removed: of the cells (Random; Salient/Non-Salient with
``by="count"``, form suffix ``_count``) or of the DINO CLS attention mass (Salient/Non-Salient with
``by="mass"``, the default: Salient drops the cells holding the top r of the mass, Non-Salient those
holding the bottom r). ``dropped_fraction(x, ctx)`` gives the fraction of cells actually dropped.

Adding an op is one function in an op module and one class here. This module is torch-free: it is
the grammar's half of each entry (parameters, checks, string form); each ``apply`` imports its torch op
(``image_ops``, ``token_ops``, ``noise``, ``saliency``) when it runs. Reading, printing and naming
string forms is :mod:`lmms_ac.robustness.grammar`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Type

from lmms_ac.registry import Registry

from .base import INT, PERCENT, Perturbation, choice, param
from .context import PerturbationContext

if TYPE_CHECKING:
    import torch

PERTURBATIONS: Registry[Type[Perturbation]] = Registry("perturbation")


def register(cls: Type[Perturbation]) -> Type[Perturbation]:
    """Add a perturbation class to ``PERTURBATIONS`` under ``cls.name`` (checks its string form)."""
    if not cls.name or not cls.form.startswith(cls.name):
        raise ValueError(f"{cls.__name__}: the string form {cls.form!r} must start with the name {cls.name!r}")
    cls.pattern()  # every {slot} has a codec
    return PERTURBATIONS.register(cls.name, cls)


def _check_ratio(p: Perturbation) -> None:
    ratio = float(p.ratio)  # type: ignore[attr-defined]
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"{p.name}: ratio must be in (0, 1), got {ratio}")
    if abs(ratio * 100 - round(ratio * 100)) > 1e-6:
        raise ValueError(f"{p.name}: ratio must be a whole percent (0.01 steps), got {ratio}")
    object.__setattr__(p, "ratio", round(ratio * 100) / 100)


def _check_group(p: Perturbation) -> None:
    m, g = int(p.m), int(p.group)  # type: ignore[attr-defined]
    if m < 1 or not 0 <= g < m * m:
        raise ValueError(f"{p.name}: need m >= 1 and 0 <= group < m*m, got m={m}, group={g}")


def _check_layer(p: Perturbation) -> None:
    if int(p.layer) < 0:  # type: ignore[attr-defined]
        raise ValueError(f"{p.name}: layer must be >= 0, got {p.layer}")  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------- image stage
@register
@dataclass(frozen=True, kw_only=True)
class PatchShuffle(Perturbation):
    """Shuffle the tiles of an n x n grid of the image (border of H % n / W % n pixels stays). On tiled
    input (LLaVA-NeXT/OneVision) it acts on the whole image before tiling."""

    name = "patchshuffle"
    stage = "image"
    stochastic = True
    form = "patchshuffle{n}"
    on_tiles = True
    codecs = {"n": INT}
    examples = ({"n": 2}, {"n": 4}, {"n": 8}, {"n": 14})

    n: int

    def __post_init__(self) -> None:
        if int(self.n) < 2:
            raise ValueError(f"patchshuffle: n must be >= 2, got {self.n}")

    def apply(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        from .image_ops import patch_shuffle

        return patch_shuffle(x, int(self.n), ctx.generator())


@register
@dataclass(frozen=True, kw_only=True)
class RandomPatchDrop(Perturbation):
    """Zero the pixels of round(ratio * N) random cells of the encoder's patch grid. On tiled input it acts on
    each view (base view and each tile) with its own cells, drawn from the view's seed (``ctx.view``)."""

    name = "pdrop_random"
    stage = "image"
    stochastic = True
    form = "pdrop_random{ratio}"
    on_tiles = True
    codecs = {"ratio": PERCENT}
    examples = ({"ratio": 0.1}, {"ratio": 0.5}, {"ratio": 0.9})

    ratio: float

    def __post_init__(self) -> None:
        _check_ratio(self)

    def cells(self, ctx: PerturbationContext) -> torch.Tensor:
        """The dropped cells, bool ``[gh, gw]``."""
        from .image_ops import random_cells

        return random_cells(ctx.grid, self.ratio, ctx.generator())

    def drop_mask(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        """The dropped cells, bool ``[gh, gw]`` (the same signature for every PatchDrop)."""
        return self.cells(ctx)

    def dropped_fraction(self, x: torch.Tensor, ctx: PerturbationContext) -> float:
        """The fraction of the grid's cells dropped (round(ratio * N) / N)."""
        return float(self.cells(ctx).float().mean())

    def apply(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        from .image_ops import drop_cells

        return drop_cells(x, self.cells(ctx))


_BY = choice({"mass": "", "count": "_count"})


@register
@dataclass(frozen=True, kw_only=True)
class SalientPatchDrop(Perturbation):
    """Zero the most salient cells (DINO CLS attention), from the most salient down: the cells holding
    the top ``ratio`` of the attention mass (``by="mass"``, default) or the top round(ratio * N)
    cells (``by="count"``, form suffix ``_count``).

    ``saliency`` (not a parameter) injects a :class:`CachedSaliency` or a bare saliency model;
    None uses :func:`default_saliency` (DINO ViT-S/16, loaded lazily). On tiled input it acts on each
    view (base view and each tile) with that view's own saliency map."""

    name = "pdrop_salient"
    stage = "image"
    stochastic = False
    form = "pdrop_salient{ratio}{by}"
    on_tiles = True
    codecs = {"ratio": PERCENT, "by": _BY}
    examples = ({"ratio": 0.3}, {"ratio": 0.7, "by": "count"})
    end = "top"

    ratio: float
    by: str = "mass"
    saliency: Optional[Any] = param(default=None)

    def __post_init__(self) -> None:
        _check_ratio(self)
        if self.by not in ("count", "mass"):
            raise ValueError(f"{self.name}: by must be 'mass' or 'count', got {self.by!r}")
        if self.saliency is not None:
            from .saliency import CachedSaliency

            if not isinstance(self.saliency, CachedSaliency):
                object.__setattr__(self, "saliency", CachedSaliency(self.saliency))

    def saliency_map(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        from .saliency import default_saliency

        saliency = self.saliency if self.saliency is not None else default_saliency()
        return saliency(x, ctx.grid)

    def salient(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        """The top salient cells of the clean image ``x`` at this ratio, bool ``[gh, gw]``."""
        from .saliency import salient_cells

        return salient_cells(self.saliency_map(x, ctx), self.ratio, self.by, "top")

    def cells(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        """The dropped cells, bool ``[gh, gw]``."""
        from .saliency import salient_cells

        return salient_cells(self.saliency_map(x, ctx), self.ratio, self.by, self.end)

    def drop_mask(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        """The dropped cells, bool ``[gh, gw]`` (the same signature for every PatchDrop)."""
        return self.cells(x, ctx)

    def dropped_fraction(self, x: torch.Tensor, ctx: PerturbationContext) -> float:
        """The fraction of the grid's cells this drop removes from image ``x``."""
        return float(self.cells(x, ctx).float().mean())

    def apply(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        from .image_ops import drop_cells

        return drop_cells(x, self.cells(x, ctx))


@register
@dataclass(frozen=True, kw_only=True)
class NonSalientPatchDrop(SalientPatchDrop):
    """Zero the least salient cells (the background), from the least salient up: the cells holding
    the bottom ``ratio`` of the attention mass (``by="mass"``) or the bottom round(ratio * N) cells
    (``by="count"``). Like every PatchDrop, ``ratio`` is the fraction removed."""

    name = "pdrop_nonsalient"
    form = "pdrop_nonsalient{ratio}{by}"
    end = "bottom"


@register
@dataclass(frozen=True, kw_only=True)
class SyntheticImage(Perturbation):
    """Marker: evaluate on regenerated (caption -> text-to-image) images; the task swaps them in."""

    name = "synthetic"
    stage = "dataset"
    stochastic = False
    form = "synthetic"

    def apply(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        return x


# ---------------------------------------------------------------------------------- token stage
@register
@dataclass(frozen=True, kw_only=True)
class TokenPermutation(Perturbation):
    """Randomly permute the visual tokens (never the identity); rows where ``ctx.visual_mask`` is
    False (newline/separator tokens) stay in place. On tiled input (``ctx.views``) the tokens are
    permuted within the base view and within each tile, row-end tokens in place."""

    name = "tokperm"
    stage = "tokens"
    stochastic = True
    form = "tokperm"
    on_tiles = True

    def apply(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        from .token_ops import permute_visual_tokens

        return permute_visual_tokens(x, ctx.generator(), ctx.visual_mask, ctx.views)


@register
@dataclass(frozen=True, kw_only=True)
class GlobalTokenPermutation(Perturbation):
    """Randomly permute the visual tokens of an image all together (never the identity). On tiled input
    (``ctx.views``) one permutation moves tokens across the base view and all tiles; row-end tokens
    (views -1) stay in place. On one view (LLaVA-1.5) it is ``tokperm``: the same draw for the same seed."""

    name = "tokperm_global"
    stage = "tokens"
    stochastic = True
    form = "tokperm_global"
    on_tiles = True

    def apply(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        from .token_ops import permute_across_views

        return permute_across_views(x, ctx.generator(), ctx.visual_mask, ctx.views)


@register
@dataclass(frozen=True, kw_only=True)
class KeepGroup(Perturbation):
    """Feed only group ``group`` of an m x m split of the token grid (row-major order). On tiled input
    (``ctx.views``) group ``group`` of each view's own rectangle of tokens, every view together, and the
    row-end tokens, in their order."""

    name = "tokgroup"
    stage = "tokens"
    stochastic = False
    form = "tokgroup_m{m}_g{group}"
    on_tiles = True
    codecs = {"m": INT, "group": INT}
    examples = ({"m": 4, "group": 5}, {"m": 2, "group": 0})

    m: int
    group: int

    def __post_init__(self) -> None:
        _check_group(self)

    def apply(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        from .token_ops import keep_group

        return keep_group(x, ctx.grid, int(self.m), int(self.group), ctx.visual_mask, ctx.views)


@register
@dataclass(frozen=True, kw_only=True)
class GroupNoise(Perturbation):
    """Add u * mean(|x_g|), u ~ U(-1, 1), to the tokens x_g of one group (importance of a group). On tiled
    input x_g is group ``group`` of every view's rectangle together; row-end tokens untouched."""

    name = "toknoise"
    stage = "tokens"
    stochastic = True
    form = "toknoise_m{m}_g{group}"
    on_tiles = True
    codecs = {"m": INT, "group": INT}
    examples = ({"m": 4, "group": 5}, {"m": 3, "group": 8})

    m: int
    group: int

    def __post_init__(self) -> None:
        _check_group(self)

    def apply(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        from .token_ops import noise_group

        return noise_group(x, ctx.grid, int(self.m), int(self.group), ctx.generator(), ctx.visual_mask, ctx.views)


# ---------------------------------------------------------------------------------- hidden stage
@register
@dataclass(frozen=True, kw_only=True)
class LayerNoise(Perturbation):
    """Add u * mean(|h|) to every position of the hidden state entering decoder block ``layer``."""

    name = "layernoise"
    stage = "hidden"
    stochastic = True
    form = "layernoise_l{layer}"
    codecs = {"layer": INT}
    examples = ({"layer": 0}, {"layer": 12})

    layer: int

    def __post_init__(self) -> None:
        _check_layer(self)

    def apply(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        from .noise import add_component_noise

        return add_component_noise(x, slice(None), ctx.generator())


@register
@dataclass(frozen=True, kw_only=True)
class ModalityNoise(Perturbation):
    """Add u * mean(|h_mod|) to the positions of one modality at ``layer``: ``image`` = positions
    where ``ctx.visual_mask`` is True, ``text`` = every other position of the sample."""

    name = "modnoise"
    stage = "hidden"
    stochastic = True
    form = "modnoise_{modality}_l{layer}"
    codecs = {"modality": choice({"image": "image", "text": "text"}), "layer": INT}
    examples = ({"modality": "image", "layer": 0}, {"modality": "text", "layer": 16})

    modality: str
    layer: int

    def __post_init__(self) -> None:
        if self.modality not in ("image", "text"):
            raise ValueError(f"modnoise: modality must be 'image' or 'text', got {self.modality!r}")
        _check_layer(self)

    def apply(self, x: torch.Tensor, ctx: PerturbationContext) -> torch.Tensor:
        from .noise import add_modality_noise

        return add_modality_noise(x, ctx.visual_mask, self.modality, ctx.generator())
