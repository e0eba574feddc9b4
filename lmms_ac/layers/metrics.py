"""Per-layer metrics fed one image at a time: C at layer L, linear reconstruction, attention balance.

* ``LayerCorrespondence`` - the C score (``lmms_ac.scores.correspondence.match_pairs``: same patch
  lookup, matching method, PCK rule and letterbox inverse) on each layer's L2-normalised states, and
  on the encoder's own tokens (key ``ENCODER``) as the reference.
* ``LinearReconstruction`` - a least-squares linear map (with bias, light ridge) from layer-L states
  to the encoder's tokens (ridge relative to each input channel's variance), fitted on the training images' tokens
  (normal equations accumulated in
  float64, so every token of every training image counts without being stored) and measured as the
  mean cosine similarity between mapped states and encoder tokens on held-out images (a seeded
  sample of ``tokens_per_image`` tokens of each).
* ``AttentionBalance`` - mean over images of the per-image share (already averaged over heads and
  text positions by the extractor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Hashable, List, Mapping, Sequence, Set, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from lmms_ac.scores.correspondence import (
    CScoreResult,
    ImageFeatures,
    Letterbox,
    PairOutcome,
    PatchGrid,
    match_pairs,
    summarize,
)
from lmms_ac.scores.spair import SPairPair

ENCODER = "encoder"
Key = Union[int, str]


class LayerCorrespondence:
    """Accumulates pair outcomes per layer key (ints for layers, ``ENCODER`` for the encoder)."""

    def __init__(self, keys: Sequence[Key], grid: PatchGrid, method: str = "argmax", alpha: float = 0.1):
        self.keys = list(keys)
        self.grid = grid
        self.method = method
        self.alpha = alpha
        self.outcomes: Dict[Key, List[PairOutcome]] = {k: [] for k in self.keys}

    def match(
        self, pairs: Sequence[SPairPair], bank: Mapping[Path, Tuple[Letterbox, Mapping[Key, torch.Tensor]]]
    ) -> None:
        """Score ``pairs`` whose two images are in ``bank`` (path -> (letterbox, {key: normalised [N, D]}))."""
        if not pairs:
            return
        needed = {p for pair in pairs for p in (pair.src_path, pair.trg_path)}
        for key in self.keys:
            feats = {p: ImageFeatures(bank[p][1][key], bank[p][0]) for p in needed}
            self.outcomes[key].extend(match_pairs(pairs, feats, self.grid, method=self.method, alpha=self.alpha))

    def results(self) -> Dict[Key, CScoreResult]:
        return {
            k: summarize(v, encoder_passes=0, method=self.method, alpha=self.alpha) for k, v in self.outcomes.items()
        }


@dataclass
class ReconstructionResult:
    cosine: float
    train_images: int
    test_images: int
    train_tokens: int
    test_tokens: int


class _Moments:
    """Running sums for a centred least-squares fit of y on x (float64)."""

    def __init__(self, dx: int, dy: int, device: torch.device):
        kw = dict(dtype=torch.float64, device=device)
        self.xtx = torch.zeros(dx, dx, **kw)
        self.xty = torch.zeros(dx, dy, **kw)
        self.sx = torch.zeros(dx, **kw)
        self.sy = torch.zeros(dy, **kw)
        self.n = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.to(self.xtx.device, torch.float64)
        y = y.to(self.xtx.device, torch.float64)
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.n += x.shape[0]

    def solve(self, ridge: float) -> Tuple[torch.Tensor, torch.Tensor]:
        mx, my = self.sx / self.n, self.sy / self.n
        cxx = self.xtx - self.n * torch.outer(mx, mx)
        cxy = self.xty - self.n * torch.outer(mx, my)
        # ridge relative to each dimension's own variance (= ridge on standardised features): LLM residual
        # streams have a few huge-variance channels that a single scalar ridge would let swamp the others
        var = torch.diagonal(cxx).clamp_min(1e-12 * float(torch.diagonal(cxx).max().clamp_min(1e-30)))
        reg = torch.diag_embed(ridge * var + 1e-12 * float(var.max()))
        weight = torch.linalg.solve(cxx + reg, cxy)
        return weight, my - mx @ weight


class LinearReconstruction:
    """Least-squares map layer-L states -> encoder tokens; fit on ``train`` images, cosine on the others."""

    def __init__(
        self,
        layers: Sequence[int],
        train: Set[Hashable],
        *,
        tokens_per_image: int = 64,
        ridge: float = 1e-3,
        seed: int = 0,
    ):
        if tokens_per_image < 1:
            raise ValueError(f"tokens_per_image must be >= 1, got {tokens_per_image}")
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}")
        self.layers = list(layers)
        self.train = set(train)
        self.tokens_per_image = tokens_per_image
        self.ridge = ridge
        self.seed = seed
        self.moments: Dict[int, _Moments] = {}
        self.test_x: Dict[int, List[torch.Tensor]] = {layer: [] for layer in self.layers}
        self.test_y: List[torch.Tensor] = []
        self.n_train = self.n_test = 0

    def add(self, image_id: Hashable, index: int, encoder: torch.Tensor, states: Mapping[int, torch.Tensor]) -> None:
        """One image: ``encoder`` ``[N, D_vis]`` tokens, ``states`` ``{layer: [N, D]}``; ``index`` seeds the token
        sample."""
        if image_id in self.train:
            self.n_train += 1
            for layer in self.layers:
                x = states[layer]
                if layer not in self.moments:
                    self.moments[layer] = _Moments(x.shape[-1], encoder.shape[-1], x.device)
                self.moments[layer].add(x, encoder)
            return
        self.n_test += 1
        n = encoder.shape[0]
        k = min(n, self.tokens_per_image)
        idx = np.sort(np.random.default_rng([self.seed, index]).choice(n, k, replace=False))
        idx_t = torch.from_numpy(idx).to(encoder.device)
        self.test_y.append(encoder[idx_t].float().cpu())
        for layer in self.layers:
            self.test_x[layer].append(states[layer][idx_t.to(states[layer].device)].float().cpu())

    def results(self) -> Dict[int, ReconstructionResult]:
        if not self.n_train or not self.n_test:
            raise ValueError(
                f"reconstruction needs images on both sides of the split (train {self.n_train}, "
                f"test {self.n_test}); score more images or pass --no-recon"
            )
        y = torch.cat(self.test_y).double()
        out = {}
        for layer in self.layers:
            m = self.moments[layer]
            weight, bias = m.solve(self.ridge)
            x = torch.cat(self.test_x[layer]).double().to(weight.device)
            pred = x @ weight + bias
            cos = F.cosine_similarity(pred, y.to(pred.device), dim=-1)
            out[layer] = ReconstructionResult(float(cos.mean()), self.n_train, self.n_test, m.n, int(y.shape[0]))
        return out


class AttentionBalance:
    """Mean over images of the share of text->image attention per block, and the uniform-attention baseline."""

    def __init__(self) -> None:
        self.shares: Dict[int, List[float]] = {}
        self.uniform: List[float] = []

    def add(self, shares: Mapping[int, float], uniform: float) -> None:
        for layer, value in shares.items():
            if not math.isnan(value):
                self.shares.setdefault(layer, []).append(value)
        if not math.isnan(uniform):
            self.uniform.append(uniform)

    def results(self) -> Tuple[Dict[int, float], float, int]:
        """(per-block mean share, uniform baseline, number of images)."""
        if not self.shares:
            raise ValueError(
                "no text position follows the image in any prompt; attention balance is undefined "
                "(give prompts with text after the image, or pass --no-attention)"
            )
        means = {k: float(np.mean(v)) for k, v in sorted(self.shares.items())}
        return (
            means,
            float(np.mean(self.uniform)) if self.uniform else float("nan"),
            max(len(v) for v in self.shares.values()),
        )


def split_train(items: Sequence[Hashable], seed: int = 0, fraction: float = 0.5) -> Set[Hashable]:
    """A seeded half (``fraction``, rounded up) of ``items`` for fitting; the rest is held out."""
    items = list(items)
    order = np.random.default_rng(seed).permutation(len(items))
    n_train = min(len(items) - 1, max(1, math.ceil(fraction * len(items)))) if len(items) > 1 else len(items)
    return {items[i] for i in order[:n_train]}
