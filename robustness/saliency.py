"""Saliency for Salient / Non-Salient PatchDrop: CLS attention of a self-supervised ViT.

Selection (:func:`salient_cells`): Salient at r drops the cells holding the top fraction r of the
attention mass, Non-Salient at r the cells holding the bottom fraction r (the background); by cell
count is the option ``by="count"``.

Definition (docs/METHODS.md#saliency-cls-attention-mass): the CLS -> patch attention of the LAST block of DINO ViT-S/16
(``facebook/dino-vits16``), averaged over heads, computed on the clean encoder input (``[3, S, S]`` in
[0, 1], resized to the ViT's input size and ImageNet-normalised), then mapped onto the ENCODER's
patch grid ``(gh, gw)`` by exact area averaging (:func:`area_resize`).

The saliency model is injectable: anything satisfying :class:`SaliencyModel`. The default loads DINO
lazily on first use; tests inject a tiny random ``ViTModel`` or a fake. :class:`CachedSaliency`
caches the grid map per image (key: SHA-256 of the pixel bytes + grid + model id) in a bounded
in-memory LRU and optionally in ``cache_dir`` as ``.npy`` files written atomically.
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional, Protocol, Tuple, Union, runtime_checkable

import numpy as np
import torch
from loguru import logger

from lmms_ac.io import atomic_write_bytes

from .grid import count_for_ratio

DINO_HUB_ID = "facebook/dino-vits16"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class SaliencyModel(Protocol):
    """``pixels [3, S, S]`` in [0, 1] -> a non-negative attention map ``[h, w]`` (any resolution)."""

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor: ...


class ViTCLSAttention:
    """CLS -> patch attention of a Hugging Face ``ViTModel``'s last block, mean over heads."""

    def __init__(
        self,
        model: Any,
        *,
        input_size: Optional[int] = None,
        mean: Tuple[float, float, float] = IMAGENET_MEAN,
        std: Tuple[float, float, float] = IMAGENET_STD,
        model_id: str = "custom-vit",
    ):
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")  # sdpa returns no attention weights
        self.model = model.eval()
        self.input_size = int(input_size or model.config.image_size)
        self.patch_size = int(model.config.patch_size)
        self.mean, self.std = mean, std
        self.model_id = model_id

    @classmethod
    def from_pretrained(cls, hub_id: str = DINO_HUB_ID, **kwargs: Any) -> "ViTCLSAttention":
        from transformers import ViTModel  # heavy: only when saliency is really used

        logger.info(f"loading saliency model {hub_id}")
        model = ViTModel.from_pretrained(hub_id, add_pooling_layer=False, attn_implementation="eager")
        return cls(model, model_id=hub_id, **kwargs)

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        param = next(self.model.parameters())
        x = pixels.detach().to(device=param.device, dtype=torch.float32).unsqueeze(0)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = torch.nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True
            )
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(param.dtype)
        interpolate = self.input_size != int(self.model.config.image_size)
        out = self.model(pixel_values=x, output_attentions=True, interpolate_pos_encoding=interpolate)
        if not out.attentions:
            raise RuntimeError("the saliency ViT returned no attentions; it must use attn_implementation='eager'")
        h = w = self.input_size // self.patch_size
        cls_to_patch = out.attentions[-1][0, :, 0, 1 : 1 + h * w].float().mean(0)
        return cls_to_patch.reshape(h, w).cpu()


class LazyDinoSaliency:
    """Loads :class:`ViTCLSAttention` from ``hub_id`` on first call; follows the pixels' device."""

    def __init__(self, hub_id: str = DINO_HUB_ID):
        self.hub_id = hub_id
        self.model_id = hub_id
        self._impl: Optional[ViTCLSAttention] = None

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._impl is None:
            self._impl = ViTCLSAttention.from_pretrained(self.hub_id)
        if next(self._impl.model.parameters()).device != pixels.device:
            self._impl.model.to(pixels.device)
        return self._impl(pixels)


def _overlap_weights(src: int, dst: int) -> torch.Tensor:
    """``[dst, src]`` row-normalised overlap lengths of dst cells with src cells on [0, 1]."""
    i = torch.arange(dst, dtype=torch.float64)[:, None]
    a = torch.arange(src, dtype=torch.float64)[None, :]
    lo = torch.maximum(i * src, a * dst)
    hi = torch.minimum((i + 1) * src, (a + 1) * dst)
    overlap = (hi - lo).clamp(min=0)
    return overlap / overlap.sum(dim=1, keepdim=True)


def area_resize(attention: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Exact area averaging of ``[h, w]`` onto ``size = (gh, gw)``: each target cell is the
    overlap-weighted mean of the source cells it covers (works up and down; preserves the mean)."""
    a = attention.detach().to("cpu", torch.float64)
    rows = _overlap_weights(a.shape[0], int(size[0]))
    cols = _overlap_weights(a.shape[1], int(size[1]))
    return (rows @ a @ cols.T).float()


SELECTIONS = ("mass", "count")
ENDS = ("top", "bottom")


def salient_cells(saliency: torch.Tensor, ratio: float, by: str = "mass", end: str = "top") -> torch.Tensor:
    """Bool ``[gh, gw]`` of the cells PatchDrop removes at ``ratio`` (docs/METHODS.md#occlusion-patchdrop).

    ``end="top"`` (Salient) walks the cells from the most salient down, ``end="bottom"``
    (Non-Salient) from the least salient up (ties: lower row-major index first either way).
    ``by="mass"`` (the default, the paper's definition) takes the shortest such run whose saliency
    sums to at least ``ratio`` of the total (up to 1e-6): the cells holding that fraction of the
    attention mass. ``by="count"`` takes ``round(ratio * N)`` cells (halves up), as Random PatchDrop
    counts cells. Either way ``ratio`` is the fraction removed.
    """
    if by not in SELECTIONS:
        raise ValueError(f"by must be one of {', '.join(SELECTIONS)}, got {by!r}")
    if end not in ENDS:
        raise ValueError(f"end must be 'top' (most salient first) or 'bottom' (least salient first), got {end!r}")
    flat = saliency.detach().reshape(-1).to("cpu", torch.float64)
    n = flat.numel()
    order = torch.argsort(-flat if end == "top" else flat, stable=True)
    if by == "count":
        k = count_for_ratio(ratio, n)
    else:
        total = float(flat.sum())
        if not total > 0:
            raise ValueError("saliency map sums to zero; mass-based selection is undefined")
        cum = torch.cumsum(flat[order], 0) / total
        target = torch.tensor(ratio - 1e-6, dtype=torch.float64)  # tolerance for float32 maps
        k = 0 if ratio <= 0 else min(n, int(torch.searchsorted(cum, target)) + 1)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[:k]] = True
    return mask.reshape(saliency.shape)


class CachedSaliency:
    """Saliency on an encoder grid, cached per (pixels, grid, model) in memory and optionally on disk."""

    def __init__(
        self,
        model: Optional[SaliencyModel] = None,
        *,
        maxsize: int = 1024,
        cache_dir: Optional[Union[str, Path]] = None,
        model_id: Optional[str] = None,
    ):
        self.model: SaliencyModel = model if model is not None else LazyDinoSaliency()
        self.model_id = model_id or getattr(self.model, "model_id", type(self.model).__name__)
        self.maxsize = int(maxsize)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self.hits = 0
        self.misses = 0

    def key(self, pixels: torch.Tensor, grid: Tuple[int, int]) -> str:
        data = pixels.detach().to("cpu", torch.float32).contiguous().numpy()
        h = hashlib.sha256()
        h.update(f"{self.model_id}|{tuple(int(g) for g in grid)}|{tuple(data.shape)}|".encode())
        h.update(data.tobytes())
        return h.hexdigest()

    def __call__(self, pixels: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """Saliency ``[gh, gw]`` (float32, CPU) of ``pixels [3, S, S]`` on the encoder grid."""
        key = self.key(pixels, grid)
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key].clone()
        result = self._load(key)
        if result is None:
            self.misses += 1
            result = area_resize(self.model(pixels), grid)
            self._store(key, result)
        else:
            self.hits += 1
        self._remember(key, result)
        return result.clone()

    def clear(self) -> None:
        """Forget the in-memory entries (the disk cache stays)."""
        self._memory.clear()

    def _remember(self, key: str, value: torch.Tensor) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.maxsize:
            self._memory.popitem(last=False)

    def _path(self, key: str) -> Optional[Path]:
        return self.cache_dir / f"{key}.npy" if self.cache_dir is not None else None

    def _load(self, key: str) -> Optional[torch.Tensor]:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False)).float()
        except (OSError, ValueError) as err:
            logger.warning(f"ignoring unreadable saliency cache file {path}: {err}")
            return None

    def _store(self, key: str, value: torch.Tensor) -> None:
        path = self._path(key)
        if path is None:
            return
        buf = io.BytesIO()
        np.save(buf, value.numpy().astype(np.float32), allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue(), overwrite=True)


_default: Optional[CachedSaliency] = None


def default_saliency() -> CachedSaliency:
    """The process-wide saliency used when a perturbation carries none (DINO, loaded lazily)."""
    global _default
    if _default is None:
        _default = CachedSaliency()
    return _default


def set_default_saliency(saliency: Optional[Union[CachedSaliency, SaliencyModel]]) -> None:
    """Replace the default saliency (a model is wrapped in :class:`CachedSaliency`); ``None`` resets it."""
    global _default
    if saliency is None or isinstance(saliency, CachedSaliency):
        _default = saliency
    else:
        _default = CachedSaliency(saliency)
