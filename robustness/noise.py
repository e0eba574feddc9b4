"""Uniform noise scaled to a component's magnitude (importance scores, token/layer/modality noise).

The one definition used everywhere: for a component ``x_c`` (the rows of a ``[T, D]`` tensor that
form the component: a token group, all positions of a layer, one modality's positions)

    z = u * mean(|x_c|),   u ~ U(-1, 1) i.i.d. per entry, shape of x_c,

where ``mean(|x_c|)`` is one scalar per sample: the mean absolute value over every entry (all
rows and channels) of the component, computed in float32. ``x_c + z`` is computed in float32 and
cast back to the input dtype. ``u`` is drawn on the CPU from the caller's generator.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch


def uniform_noise(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """``U(-1, 1)`` float32 samples on the CPU."""
    return torch.rand(tuple(shape), generator=generator, dtype=torch.float32) * 2.0 - 1.0


def component_scale(component: torch.Tensor) -> torch.Tensor:
    """The magnitude noise is scaled to: ``mean(|x_c|)`` over all entries, float32 scalar."""
    return component.detach().float().abs().mean()


def add_component_noise(x: torch.Tensor, rows: Union[torch.Tensor, slice], generator: torch.Generator) -> torch.Tensor:
    """Return ``x [T, D]`` with ``u * mean(|x[rows]|)`` added to ``x[rows]`` (other rows unchanged).

    ``rows`` is a bool mask ``[T]``, an index tensor, or a slice. An empty component is a no-op.
    """
    if x.ndim != 2:
        raise ValueError(f"expected [T, D], got shape {tuple(x.shape)}")
    if isinstance(rows, slice) and rows == slice(None):  # the whole tensor: no gather/scatter
        if x.numel() == 0:
            return x.clone()
        z = uniform_noise(x.shape, generator).to(x.device)
        return (x.float() + z * component_scale(x)).to(x.dtype)
    if isinstance(rows, torch.Tensor):
        rows = rows.to(x.device)
        if rows.dtype == torch.bool:
            rows = torch.nonzero(rows, as_tuple=False).reshape(-1)
    component = x[rows]
    if component.numel() == 0:
        return x.clone()
    z = uniform_noise(component.shape, generator).to(x.device)
    noisy = (component.float() + z * component_scale(component)).to(x.dtype)
    out = x.clone()
    out[rows] = noisy
    return out


def add_modality_noise(
    x: torch.Tensor, visual_mask: Optional[torch.Tensor], modality: str, generator: torch.Generator
) -> torch.Tensor:
    """Noise on one modality of ``x [T, D]``: ``image`` = the rows where ``visual_mask [T]`` is True,
    ``text`` = every other row."""
    if visual_mask is None:
        raise ValueError("modnoise needs context.visual_mask marking the visual-token positions")
    mask = visual_mask.reshape(-1).to(torch.bool)
    if mask.numel() != x.shape[0]:
        raise ValueError(f"visual_mask has {mask.numel()} entries for {x.shape[0]} positions")
    return add_component_noise(x, mask if modality == "image" else ~mask, generator)
