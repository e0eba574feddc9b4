"""The C score (docs/METHODS.md#c-spair-keypoint-transfer): keypoint transfer with a representation's patch tokens.

For each annotated pair the source keypoint's patch feature is compared (cosine) with every target
patch; the best match (``argmax``) or the published ``window_softargmax`` gives a target patch
whose centre, mapped back to the ORIGINAL target image, is correct when it lies closer than
``alpha * max(h, w)`` of the target bounding box. C = mean over pairs of the per-pair fraction
correct, in percent; only keypoints visible in both images count.

Geometry: every image is resized keeping its aspect ratio so its longer side is the encoder's input
side S, centred on a black (zero-valued pixel) S x S canvas, and then normalised; keypoints go
through the very same transform (``Letterbox``), and predictions through its inverse. Coordinates
are continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``). The patch grid may be coarser
than ``patch_size`` suggests (diffusion features): a cell is ``S / grid`` input pixels.

Each image is encoded once per run (batched; features are L2-normalised and cached per image while
its category is scored), never once per pair.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from loguru import logger
from PIL import Image
from tqdm.auto import tqdm

from lmms_ac.scores.methods import CORRESPONDENCE_METHODS
from lmms_ac.scores.spair import PathLike, SPairPair, load_pairs
from lmms_ac.vision.base import VisionRepresentation, to_rgb

Representation = Union[VisionRepresentation, Sequence[VisionRepresentation]]

WINDOW = 11  # patches, published window soft-argmax
TEMPERATURE = 0.02  # published softmax temperature


# ----------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Letterbox:
    """Aspect-preserving resize of a ``width x height`` image into an ``size x size`` canvas,
    centred, zero padding; maps points both ways."""

    width: int
    height: int
    size: int
    new_width: int
    new_height: int
    pad_x: int
    pad_y: int

    @classmethod
    def fit(cls, width: int, height: int, size: int) -> "Letterbox":
        scale = size / max(width, height)
        nw = min(size, max(1, round(width * scale)))
        nh = min(size, max(1, round(height * scale)))
        return cls(width, height, size, nw, nh, (size - nw) // 2, (size - nh) // 2)

    @property
    def scale(self) -> Tuple[float, float]:
        return self.new_width / self.width, self.new_height / self.height

    def to_padded(self, xy: np.ndarray) -> np.ndarray:
        """Original-image points ``[..., 2]`` (x, y) -> padded-canvas points."""
        sx, sy = self.scale
        return np.asarray(xy, dtype=np.float64) * (sx, sy) + (self.pad_x, self.pad_y)

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Padded-canvas points -> original-image points (inverse of ``to_padded``)."""
        sx, sy = self.scale
        return (np.asarray(xy, dtype=np.float64) - (self.pad_x, self.pad_y)) / (sx, sy)

    def apply(self, image: Image.Image) -> torch.Tensor:
        """RGB image -> ``[3, size, size]`` float tensor in [0, 1], zero padded."""
        image = to_rgb(image)
        if image.size != (self.width, self.height):
            raise ValueError(f"letterbox for {self.width}x{self.height} applied to a {image.size} image")
        canvas = Image.new("RGB", (self.size, self.size), (0, 0, 0))
        canvas.paste(image.resize((self.new_width, self.new_height), Image.BICUBIC), (self.pad_x, self.pad_y))
        return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def letterbox(image: Image.Image, size: int) -> Tuple[torch.Tensor, Letterbox]:
    """Aspect-preserving resize + zero pad of ``image`` to ``size``; returns pixels and transform."""
    box = Letterbox.fit(image.size[0], image.size[1], size)
    return box.apply(image), box


@dataclass(frozen=True)
class PatchGrid:
    """``rows x cols`` token grid over an ``size x size`` input, row-major. ``covered``: the top-left pixels the
    grid covers when a patch convolution drops a remainder (SigLIP-so400m at 384 px: 378); points beyond fall in
    the last row or column. None: the whole input."""

    rows: int
    cols: int
    size: int
    covered: Optional[int] = None

    @property
    def cell(self) -> Tuple[float, float]:
        """(width, height) of one cell in input pixels."""
        extent = self.covered or self.size
        return extent / self.cols, extent / self.rows

    def patch_index(self, xy: np.ndarray) -> np.ndarray:
        """Padded-canvas points ``[K, 2]`` -> flat index of the containing cell (clipped to the grid)."""
        cw, ch = self.cell
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        col = np.clip(np.floor(xy[:, 0] / cw), 0, self.cols - 1).astype(np.int64)
        row = np.clip(np.floor(xy[:, 1] / ch), 0, self.rows - 1).astype(np.int64)
        return row * self.cols + col

    def centre(self, row_col: np.ndarray) -> np.ndarray:
        """(row, col) cell coordinates ``[K, 2]`` (may be fractional) -> padded-canvas (x, y) of the centre."""
        cw, ch = self.cell
        rc = np.asarray(row_col, dtype=np.float64).reshape(-1, 2)
        return np.stack([(rc[:, 1] + 0.5) * cw, (rc[:, 0] + 0.5) * ch], axis=1)


def is_correct(pred_xy: np.ndarray, gt_xy: np.ndarray, bbox_size: float, alpha: float) -> np.ndarray:
    """PCK rule: Euclidean distance strictly below ``alpha * bbox_size`` (both in original pixels)."""
    dist = np.linalg.norm(np.asarray(pred_xy, dtype=np.float64) - np.asarray(gt_xy, dtype=np.float64), axis=-1)
    return dist < alpha * bbox_size


# ----------------------------------------------------------------------------- prediction
def _argmax(sims: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
    idx = sims.argmax(dim=1)
    return torch.stack([torch.div(idx, grid.cols, rounding_mode="floor"), idx % grid.cols], dim=1).to(sims.dtype)


def _window_softargmax(
    sims: torch.Tensor, grid: PatchGrid, window: int = WINDOW, temperature: float = TEMPERATURE
) -> torch.Tensor:
    """Published variant: zero the similarities outside a ``window x window`` cell window around the
    argmax (the zeros still take part in the softmax, as in the released code), softmax over the
    whole map with ``temperature``, expected (row, col)."""
    k = sims.shape[0]
    peak = _argmax(sims, grid)
    rows = torch.arange(grid.rows, device=sims.device, dtype=sims.dtype)
    cols = torch.arange(grid.cols, device=sims.device, dtype=sims.dtype)
    radius = window // 2
    in_rows = (rows[None, :] - peak[:, :1]).abs() <= radius  # [K, R]
    in_cols = (cols[None, :] - peak[:, 1:]).abs() <= radius  # [K, C]
    mask = (in_rows[:, :, None] & in_cols[:, None, :]).reshape(k, -1)
    prob = torch.softmax(sims * mask / temperature, dim=1).view(k, grid.rows, grid.cols)
    exp_row = (prob.sum(dim=2) * rows).sum(dim=1)
    exp_col = (prob.sum(dim=1) * cols).sum(dim=1)
    return torch.stack([exp_row, exp_col], dim=1)


METHODS = CORRESPONDENCE_METHODS  # name -> the function of this module that implements it


def predict_cells(sims: torch.Tensor, grid: PatchGrid, method: str = "argmax") -> torch.Tensor:
    """Similarities ``[K, N]`` over the target grid -> predicted (row, col) ``[K, 2]`` (float)."""
    if sims.ndim != 2 or sims.shape[1] != grid.rows * grid.cols:
        raise ValueError(f"similarities must be [K, {grid.rows * grid.cols}], got {tuple(sims.shape)}")
    return globals()[METHODS.get(method)](sims, grid)


# ----------------------------------------------------------------------------- features
def l2_concat(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Feature combination: L2-normalise each ``[..., D_i]`` part, concatenate, re-normalise."""
    if not parts:
        raise ValueError("l2_concat needs at least one feature part")
    if len(parts) == 1:
        return F.normalize(parts[0].float(), dim=-1)
    return F.normalize(torch.cat([F.normalize(p.float(), dim=-1) for p in parts], dim=-1), dim=-1)


@dataclass
class ImageFeatures:
    """L2-normalised patch tokens ``[N, D]`` of one image and its letterbox transform."""

    tokens: torch.Tensor
    box: Letterbox


class FeatureExtractor:
    """Letterboxes, normalises and encodes images in batches with one representation or a
    combination of several (same token grid; combined with ``l2_concat``). Counts the images it
    encoded (``images_encoded``) and the batched encoder calls (``calls``)."""

    def __init__(self, representation: Representation, batch_size: int = 16, num_workers: int = 2):
        parts = [representation] if isinstance(representation, VisionRepresentation) else list(representation)
        if not parts:
            raise ValueError("no vision representation given")
        grids = {tuple(p.grid) for p in parts}
        if len(grids) != 1:
            raise ValueError(f"combined representations must share one token grid, got {sorted(grids)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.parts = parts
        rows, cols = parts[0].grid
        # one part: the pixels its tokens cover (a ViT drops the remainder of a size its patch does not divide)
        covered = parts[0].covered_size if len(parts) == 1 else None
        self.grid = PatchGrid(int(rows), int(cols), int(parts[0].image_spec.size), covered)
        self.batch_size = batch_size
        self.num_workers = max(1, num_workers)
        self.device = parts[0].device
        low = {torch.float16, torch.bfloat16}
        self.store_dtype = parts[0].dtype if all(p.dtype in low for p in parts) else torch.float32
        self.images_encoded = 0
        self.calls = 0

    @property
    def name(self) -> str:
        return "+".join(str(getattr(p, "spec", type(p).__name__)) for p in self.parts)

    def load_image(self, path: Path) -> Tuple[Dict[int, torch.Tensor], Letterbox]:
        """Decode + letterbox one image for every input size among the parts."""
        with Image.open(path) as im:
            image = to_rgb(im)
            image.load()
        pixels: Dict[int, torch.Tensor] = {}
        for part in self.parts:
            size = int(part.image_spec.size)
            if size not in pixels:
                pixels[size] = letterbox(image, size)[0]
        return pixels, Letterbox.fit(image.size[0], image.size[1], self.grid.size)

    @torch.inference_mode()
    def encode_loaded(self, loaded: Sequence[Tuple[Dict[int, torch.Tensor], Letterbox]]) -> List[ImageFeatures]:
        """Encode already letterboxed images (one batched call per part)."""
        feats = []
        for part in self.parts:
            size = int(part.image_spec.size)
            px = torch.stack([pixels[size] for pixels, _ in loaded]).to(device=part.device, dtype=part.dtype)
            tokens = part.encode(part.normalize(px))
            n = self.grid.rows * self.grid.cols
            if tokens.ndim != 3 or tokens.shape[0] != len(loaded) or tokens.shape[1] != n:
                name = getattr(part, "spec", type(part).__name__)
                raise RuntimeError(f"{name}: expected tokens [B, {n}, D], got {tuple(tokens.shape)}")
            feats.append(tokens.to(self.device))
        combined = l2_concat(feats).to(self.store_dtype)
        self.images_encoded += len(loaded)
        self.calls += 1
        return [ImageFeatures(combined[i], box) for i, (_, box) in enumerate(loaded)]

    def iter_encode_list(self, paths: Sequence[Path]) -> Iterator[List[ImageFeatures]]:
        """Yield the features of each batch of ``paths`` in order (a repeated path is encoded again);
        decoding the next batch overlaps encoding this one."""
        batches = [list(paths[i : i + self.batch_size]) for i in range(0, len(paths), self.batch_size)]
        if not batches:
            return
        with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
            pending = [pool.submit(self.load_image, p) for p in batches[0]]
            for i in range(len(batches)):
                loaded = [f.result() for f in pending]
                if i + 1 < len(batches):
                    pending = [pool.submit(self.load_image, p) for p in batches[i + 1]]
                yield self.encode_loaded(loaded)

    def iter_encode(self, paths: Sequence[Path]) -> Iterator[Dict[Path, ImageFeatures]]:
        """Yield ``{path: features}`` per batch of distinct ``paths``."""
        paths = list(OrderedDict.fromkeys(paths))
        start = 0
        for feats in self.iter_encode_list(paths):
            yield dict(zip(paths[start : start + len(feats)], feats))
            start += len(feats)

    def encode_paths(self, paths: Sequence[Path]) -> Dict[Path, ImageFeatures]:
        out: Dict[Path, ImageFeatures] = {}
        for chunk in self.iter_encode(paths):
            out.update(chunk)
        return out


# ----------------------------------------------------------------------------- matching
@dataclass(frozen=True)
class PairOutcome:
    name: str
    category: str
    n_correct: int
    n_valid: int


@torch.inference_mode()
def match_pairs(
    pairs: Sequence[SPairPair],
    features: Dict[Path, ImageFeatures],
    grid: PatchGrid,
    *,
    method: str = "argmax",
    alpha: float = 0.1,
) -> List[PairOutcome]:
    """Score pairs whose images are all in ``features``; pairs sharing a target are matched in
    one similarity product on the features' device."""
    by_target: "OrderedDict[Path, List[SPairPair]]" = OrderedDict()
    for pair in pairs:
        by_target.setdefault(pair.trg_path, []).append(pair)
    outcomes: List[PairOutcome] = []
    mismatched = set()
    for trg_path, group in by_target.items():
        trg = features[trg_path]
        queries, spans = [], []
        for pair in group:
            for key, path in (("src_imsize", pair.src_path), ("trg_imsize", pair.trg_path)):
                size = pair.extra.get(key)
                box = features[path].box
                if size and tuple(size[:2]) != (box.width, box.height):
                    mismatched.add(path)
            vis = pair.visible
            if not vis.any():
                outcomes.append(PairOutcome(pair.name, pair.category, 0, 0))
                continue
            src = features[pair.src_path]
            idx = grid.patch_index(src.box.to_padded(pair.src_kps[vis]))
            queries.append(src.tokens[torch.from_numpy(idx).to(src.tokens.device)])
            spans.append((pair, vis))
        if not queries:
            continue
        sims = torch.cat(queries).float() @ trg.tokens.float().T
        cells = predict_cells(sims, grid, method).double().cpu().numpy()
        pred = trg.box.to_original(grid.centre(cells))
        start = 0
        for pair, vis in spans:
            k = int(vis.sum())
            ok = is_correct(pred[start : start + k], pair.trg_kps[vis], pair.trg_bbox_size, alpha)
            outcomes.append(PairOutcome(pair.name, pair.category, int(ok.sum()), k))
            start += k
    if mismatched:
        logger.warning(
            f"{len(mismatched)} image(s) differ in size from their annotation's *_imsize "
            f"(e.g. {sorted(mismatched)[0]}); keypoints are read as pixels of the file on disk"
        )
    return outcomes


# ----------------------------------------------------------------------------- the score
@dataclass
class CScoreResult:
    """C score (percent, mean over pairs of per-pair PCK) and its bookkeeping."""

    overall: float
    per_category: Dict[str, float]
    n_pairs: int
    n_keypoints: int
    encoder_passes: int
    encoder_calls: int = 0
    n_images: int = 0
    n_pairs_skipped: int = 0
    keypoint_pck: float = float("nan")
    method: str = "argmax"
    alpha: float = 0.1
    seconds: float = 0.0
    pairs: List[PairOutcome] = field(default_factory=list, repr=False)
    baselines: Dict[str, float] = field(default_factory=dict)  # C_ocr: chance and same-position references

    def to_dict(self, with_pairs: bool = False) -> Dict[str, object]:
        out = asdict(self)
        if not with_pairs:
            out.pop("pairs")
        return out


def summarize(outcomes: Sequence[PairOutcome], **extra) -> CScoreResult:
    """Aggregate per-pair outcomes: mean of per-pair fractions (overall and per category)."""
    valid = [o for o in outcomes if o.n_valid > 0]
    if not valid:
        raise ValueError("no pair has a keypoint visible in both images; nothing to score")
    frac = lambda os_: 100.0 * float(np.mean([o.n_correct / o.n_valid for o in os_]))  # noqa: E731
    cats: Dict[str, List[PairOutcome]] = {}
    for o in valid:
        cats.setdefault(o.category, []).append(o)
    n_kp = sum(o.n_valid for o in valid)
    return CScoreResult(
        overall=frac(valid),
        per_category={c: frac(v) for c, v in sorted(cats.items())},
        n_pairs=len(valid),
        n_keypoints=n_kp,
        n_pairs_skipped=len(outcomes) - len(valid),
        keypoint_pck=100.0 * sum(o.n_correct for o in valid) / n_kp,
        pairs=list(outcomes),
        **extra,
    )


def score_pairs(
    representation: Representation,
    pairs: Sequence[SPairPair],
    *,
    method: str = "argmax",
    alpha: float = 0.1,
    batch_size: int = 16,
    num_workers: int = 2,
    progress: bool = True,
) -> CScoreResult:
    """C score of ``pairs`` (see module doc). Images are encoded once each: per category, its
    images are encoded in batches and every pair is matched as soon as both its images are ready."""
    METHODS.get(method)
    if not (alpha > 0):
        raise ValueError(f"alpha must be > 0, got {alpha}")
    start = time.perf_counter()
    extractor = FeatureExtractor(representation, batch_size=batch_size, num_workers=num_workers)
    by_category: "OrderedDict[str, List[SPairPair]]" = OrderedDict()
    for pair in pairs:
        by_category.setdefault(pair.category, []).append(pair)
    outcomes: List[PairOutcome] = []
    n_images = 0
    bar = tqdm(total=len(pairs), unit="pair", desc=f"C score [{method}]", disable=not progress)
    for category, cat_pairs in by_category.items():
        needed = list(OrderedDict.fromkeys(p for pair in cat_pairs for p in (pair.src_path, pair.trg_path)))
        n_images += len(needed)
        bank: Dict[Path, ImageFeatures] = {}
        pending = cat_pairs
        bar.set_postfix_str(category)
        for chunk in extractor.iter_encode(needed):
            bank.update(chunk)
            ready = [p for p in pending if p.src_path in bank and p.trg_path in bank]
            pending = [p for p in pending if not (p.src_path in bank and p.trg_path in bank)]
            outcomes.extend(match_pairs(ready, bank, extractor.grid, method=method, alpha=alpha))
            bar.update(len(ready))
        del bank
    bar.close()
    result = summarize(
        outcomes,
        encoder_passes=extractor.images_encoded,
        encoder_calls=extractor.calls,
        n_images=n_images,
        method=method,
        alpha=alpha,
        seconds=time.perf_counter() - start,
    )
    logger.info(
        f"C[{method}, alpha={alpha}] of {extractor.name} = {result.overall:.2f}% over {result.n_pairs} pairs "
        f"({result.n_keypoints} keypoints, {result.n_pairs_skipped} pairs without visible keypoints); "
        f"{result.encoder_passes} images encoded in {result.encoder_calls} calls, {result.seconds:.1f}s"
    )
    return result


def score_c(
    representation: Representation,
    dataset_root: PathLike,
    split: str = "test",
    method: str = "argmax",
    alpha: float = 0.1,
    batch_size: int = 16,
    limit: Optional[int] = None,
    *,
    num_workers: int = 2,
    progress: bool = True,
) -> CScoreResult:
    """C score of a representation (or a list of them, combined by ``l2_concat``) on an SPair-layout
    dataset: ``dataset_root/{JPEGImages,PairAnnotation/<split>}``."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    pairs = load_pairs(dataset_root, split, limit=limit)
    return score_pairs(
        representation,
        pairs,
        method=method,
        alpha=alpha,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )


def chance_level(pairs: Sequence[SPairPair], grid: PatchGrid, alpha: float = 0.1) -> float:
    """Expected C (percent) of predicting a uniformly random target cell (centre), exact over cells."""
    fracs = []
    cells = np.stack(np.meshgrid(np.arange(grid.rows), np.arange(grid.cols), indexing="ij"), -1).reshape(-1, 2)
    centres = grid.centre(cells)
    for pair in pairs:
        vis = pair.visible
        if not vis.any():
            continue
        with Image.open(pair.trg_path) as im:
            box = Letterbox.fit(im.size[0], im.size[1], grid.size)
        pred = box.to_original(centres)  # [N, 2]
        gt = pair.trg_kps[vis]  # [K, 2]
        ok = is_correct(pred[None, :, :], gt[:, None, :], pair.trg_bbox_size, alpha)  # [K, N]
        fracs.append(ok.mean())
    return 100.0 * float(np.mean(fracs)) if fracs else math.nan
