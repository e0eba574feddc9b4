"""C_ocr: a correspondence score for text in images, beside C.

Why: C is measured on SPair-71k (animals, vehicles, furniture): no keypoint correspondence data
exists for text, so neither A nor C sees what OCR-heavy benchmarks (TextVQA, ChartQA, DocVQA...)
need, and the law fits those worst. C_ocr fills that gap with synthetic pairs that need no download:

* a source image renders text with PIL's built-in font (``ImageFont.load_default(size=...)``,
  offline in Pillow >= 10.1), one of four kinds: ``words`` (lines of words), ``numbers`` (prices,
  dates, percentages, decimals), ``table`` (ruled grid, header + numeric cells) and ``chart``
  (axes with tick labels, category labels, a title and a data line);
* the target is the source under a known affine transform (translation, scale, small rotation;
  no perspective), drawn on the same canvas with the background colour filling what moves in;
* keypoints are the centres of the rendered words/labels, mapped by the same transform; points
  leaving the target canvas are dropped (pair files list points visible in both images, as
  SPair-71k's do); the bounding box is that of the text region (target: of its transformed corners).

Pairs are written in the SPair-71k layout (``JPEGImages/<kind>/*.jpg``, ``PairAnnotation/test``),
so ``score_c`` and ``lmms-ac score-c`` score them unchanged; the row's score name is ``C_ocr``.
Matching a word to the same word after a small affine warp needs features that keep where the
text is and what it says: close neighbours in a line, repeated table rules and tick marks make it
harder than it looks, which is the point (raw pixel patches, for instance, solve an identity warp
exactly but fall far short under the default sub-cell shifts, rotations and scalings). The
threshold is C's: ``alpha`` times the longer side of the text-region box, about one or two text
lines at ``alpha = 0.1``; a smaller ``--alpha`` asks for word-level precision. The generator is
deterministic for a seed (pair ``i`` uses its own generator seeded by ``(seed, i)``, so a smaller
``n`` gives a prefix of a larger one) for a given Pillow/FreeType build; the Pillow version is
recorded with every score.
"""
from __future__ import annotations

import io
import json
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from loguru import logger
from PIL import Image, ImageDraw, ImageFont

from lmms_ac.io import PathLike, atomic_write_bytes, atomic_write_text, provenance
from lmms_ac.scores.spair import image_dir, keypoints_to_json, normalize_split, write_pair

GENERATOR_VERSION = 1
KINDS = ("words", "numbers", "table", "chart")
SCORE_NAME = "C_ocr"

_WORDS = (
    "apple river market orange window planet silver garden yellow bridge coffee ticket museum "
    "winter summer engine letter number camera pencil rocket forest island butter dragon violet "
    "kitchen station harbor doctor mirror button jacket candle thunder meadow pirate laptop "
    "orchard castle falcon lantern velvet canyon glacier puzzle compass anchor saddle marble "
    "copper walnut oyster tunnel bamboo cactus parade radar signal vector matrix kernel pixel "
    "token layer model vision answer question chart table total price sales month year north "
    "south east west open closed exit entry stop yield speed limit route gate floor level"
).split()
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_UNITS = ("kg", "km", "ml", "USD", "EUR", "%", "pts", "GB")


@dataclass(frozen=True)
class OcrPairsConfig:
    """Everything that decides the generated data (hashed into the score's config)."""

    n: int = 200
    seed: int = 0
    targets_per_source: int = 2
    max_keypoints: int = 16
    max_rotation_deg: float = 8.0
    scale_range: Tuple[float, float] = (0.8, 1.25)
    max_shift: float = 0.12  # fraction of the canvas side
    version: int = GENERATOR_VERSION

    def to_config(self) -> Dict[str, Any]:
        return {"generator": "lmms_ac.scores.ocr_pairs", **asdict(self)}


@dataclass
class TextItem:
    text: str
    box: Tuple[float, float, float, float]  # x1, y1, x2, y2

    @property
    def centre(self) -> Tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)


# ----------------------------------------------------------------------------- rendering
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _colours(rng: np.random.Generator) -> Tuple[tuple, tuple, tuple]:
    """(background, text, accent): mostly dark on light, sometimes light on dark."""
    if rng.random() < 0.7:
        bg = tuple(int(v) for v in rng.integers(215, 256, 3))
        fg = tuple(int(v) for v in rng.integers(0, 70, 3))
    else:
        bg = tuple(int(v) for v in rng.integers(0, 50, 3))
        fg = tuple(int(v) for v in rng.integers(200, 256, 3))
    accent = tuple(int(v) for v in rng.integers(40, 220, 3))
    return bg, fg, accent


def _put(draw: ImageDraw.ImageDraw, xy: Tuple[float, float], text: str, font, fill, anchor: str = "la") -> TextItem:
    draw.text(xy, text, font=font, fill=fill, anchor=anchor)
    return TextItem(text, tuple(float(v) for v in draw.textbbox(xy, text, font=font, anchor=anchor)))


def _number(rng: np.random.Generator) -> str:
    style = int(rng.integers(0, 6))
    if style == 0:
        return f"{rng.uniform(0, 999):.2f}"
    if style == 1:
        return f"${rng.uniform(1, 500):.2f}"
    if style == 2:
        return f"{int(rng.integers(1, 100))}%"
    if style == 3:
        return f"{int(rng.integers(1990, 2031))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    if style == 4:
        return f"{int(rng.integers(1000, 99999)):,}"
    return f"{int(rng.integers(1, 999))} {_UNITS[int(rng.integers(len(_UNITS)))]}"


def _flow(draw, rng, size, tokens: Sequence[str], font, fill) -> List[TextItem]:
    """Lay tokens out in left-aligned lines inside the canvas margins."""
    w, h = size
    margin = int(rng.integers(12, 40))
    x, y = margin + int(rng.integers(0, 30)), margin
    line_h = int(font.size * rng.uniform(1.5, 2.2))
    items: List[TextItem] = []
    for tok in tokens:
        tw = draw.textlength(tok, font=font)
        if x + tw > w - margin:
            x, y = margin + int(rng.integers(0, 30)), y + line_h
        if y + line_h > h - margin:
            break
        items.append(_put(draw, (x, y), tok, font, fill))
        x += tw + font.size * rng.uniform(0.6, 1.6)
    return items


def _render_words(draw, rng, size, fg, accent) -> List[TextItem]:
    font = _font(int(rng.integers(16, 29)))
    words = list(rng.choice(_WORDS, size=40, replace=False))
    words = [w.capitalize() if rng.random() < 0.3 else w.upper() if rng.random() < 0.1 else w for w in words]
    return _flow(draw, rng, size, words, font, fg)


def _render_numbers(draw, rng, size, fg, accent) -> List[TextItem]:
    font = _font(int(rng.integers(15, 25)))
    return _flow(draw, rng, size, [_number(rng) for _ in range(40)], font, fg)


def _render_table(draw, rng, size, fg, accent) -> List[TextItem]:
    w, h = size
    n_rows, n_cols = int(rng.integers(3, 7)), int(rng.integers(3, 5))
    x0, y0 = int(rng.integers(10, 40)), int(rng.integers(10, 40))
    cw, ch = (w - 2 * x0) / n_cols, min((h - 2 * y0) / n_rows, 48.0)
    font = _font(int(min(18, max(12, ch * 0.45))))
    for r in range(n_rows + 1):
        draw.line([(x0, y0 + r * ch), (x0 + n_cols * cw, y0 + r * ch)], fill=accent, width=1 + (r <= 1))
    for c in range(n_cols + 1):
        draw.line([(x0 + c * cw, y0), (x0 + c * cw, y0 + n_rows * ch)], fill=accent, width=1)
    header = list(rng.choice(_WORDS, size=n_cols, replace=False))
    items = []
    for r in range(n_rows):
        for c in range(n_cols):
            text = header[c].capitalize() if r == 0 else _number(rng)
            while draw.textlength(text, font=font) > cw - 6 and len(text) > 2:
                text = text[:-1]
            items.append(_put(draw, (x0 + (c + 0.5) * cw, y0 + (r + 0.5) * ch), text, font, fg, anchor="mm"))
    return items


def _render_chart(draw, rng, size, fg, accent) -> List[TextItem]:
    w, h = size
    font = _font(int(rng.integers(12, 17)))
    left, right = int(rng.integers(50, 70)), w - int(rng.integers(15, 35))
    top, bottom = int(rng.integers(40, 60)), h - int(rng.integers(35, 50))
    title = " ".join(rng.choice(_WORDS, 2, replace=False)).title()
    items = [_put(draw, ((left + right) / 2, top / 2), title, _font(font.size + 4), fg, anchor="mm")]
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=fg, width=2)
    n_y = int(rng.integers(4, 7))
    step = int(rng.choice([5, 10, 20, 25, 50, 100]))
    for i in range(n_y):
        y = bottom - i * (bottom - top) / (n_y - 1)
        draw.line([(left - 5, y), (left, y)], fill=fg, width=1)
        items.append(_put(draw, (left - 8, y), str(i * step), font, fg, anchor="rm"))
    n_x = int(rng.integers(4, 8))
    start = int(rng.integers(0, 12))
    if rng.random() < 0.6:
        labels = [_MONTHS[(start + i) % 12] for i in range(n_x)]
    else:
        labels = [str(int(rng.integers(1990, 2020)) + i) for i in range(n_x)]
    xs = [left + (i + 0.5) * (right - left) / n_x for i in range(n_x)]
    for x, lab in zip(xs, labels):
        draw.line([(x, bottom), (x, bottom + 4)], fill=fg, width=1)
        items.append(_put(draw, (x, bottom + 8), lab, font, fg, anchor="mt"))
    values = rng.uniform(0.1, 0.95, n_x)
    draw.line([(x, bottom - v * (bottom - top)) for x, v in zip(xs, values)], fill=accent, width=2)
    return items


_RENDERERS = {"words": _render_words, "numbers": _render_numbers, "table": _render_table, "chart": _render_chart}


def render_source(rng: np.random.Generator, kind: str) -> Tuple[Image.Image, List[TextItem], tuple]:
    """One source image of ``kind``: (image, text items with boxes, background colour)."""
    size = (int(rng.integers(320, 481)), int(rng.integers(256, 385)))
    bg, fg, accent = _colours(rng)
    image = Image.new("RGB", size, bg)
    items = _RENDERERS[kind](ImageDraw.Draw(image), rng, size, fg, accent)
    return image, items, bg


# ----------------------------------------------------------------------------- warping
def random_affine(rng: np.random.Generator, size: Tuple[int, int], cfg: OcrPairsConfig, shrink: float = 1.0) -> np.ndarray:
    """A 3x3 forward affine (source -> target pixels): rotate + scale about the centre, then shift."""
    w, h = size
    theta = math.radians(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg) * shrink)
    lo, hi = cfg.scale_range
    s = math.exp(rng.uniform(math.log(lo), math.log(hi)) * shrink)
    tx, ty = (rng.uniform(-cfg.max_shift, cfg.max_shift, 2) * shrink * (w, h))
    c, sn = math.cos(theta) * s, math.sin(theta) * s
    cx, cy = w / 2.0, h / 2.0
    return np.array([[c, -sn, cx - c * cx + sn * cy + tx], [sn, c, cy - sn * cx - c * cy + ty], [0.0, 0.0, 1.0]])


def apply_affine(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


def warp_image(image: Image.Image, matrix: np.ndarray, fill: tuple) -> Image.Image:
    """Draw ``image`` under the forward affine ``matrix`` on a canvas of the same size (Pillow
    samples at pixel centres, so continuous coordinates map exactly by ``matrix``)."""
    inv = np.linalg.inv(matrix)
    return image.transform(image.size, Image.AFFINE, data=tuple(inv[:2].ravel()), resample=Image.BICUBIC, fillcolor=fill)


def _union_box(items: Sequence[TextItem], pad: float = 4.0) -> Tuple[float, float, float, float]:
    boxes = np.array([it.box for it in items])
    return (boxes[:, 0].min() - pad, boxes[:, 1].min() - pad, boxes[:, 2].max() + pad, boxes[:, 3].max() + pad)


def _clip_box(box, size) -> List[float]:
    w, h = size
    x1, y1, x2, y2 = box
    return [round(max(0.0, x1), 2), round(max(0.0, y1), 2), round(min(float(w), x2), 2), round(min(float(h), y2), 2)]


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()


# ----------------------------------------------------------------------------- the dataset
def make_ocr_pairs(
    root: PathLike, n: int = 200, seed: int = 0, *, split: str = "test", config: Optional[OcrPairsConfig] = None
) -> Path:
    """Write ``n`` text-image pairs in the SPair-71k layout under ``root`` (refuses to overwrite)."""
    cfg = config or OcrPairsConfig(n=n, seed=seed)
    if cfg.n < 1:
        raise ValueError(f"n must be >= 1, got {cfg.n}")
    root = Path(root)
    split = normalize_split(split)
    ann = root / "PairAnnotation" / split
    if ann.is_dir() and any(ann.glob("*.json")):
        raise FileExistsError(f"{ann} already holds pair annotations; choose an empty directory")
    n_sources = math.ceil(cfg.n / cfg.targets_per_source)
    pair_id = 0
    for i in range(n_sources):
        rng = np.random.default_rng([cfg.seed, i])
        kind = KINDS[i % len(KINDS)]
        image, items, bg = render_source(rng, kind)
        if len(items) > cfg.max_keypoints:
            keep = np.sort(rng.choice(len(items), cfg.max_keypoints, replace=False))
            items = [items[k] for k in keep]
        src_name = f"{kind}_{cfg.seed}_{i:05d}_src.jpg"
        folder = image_dir(root, kind)
        atomic_write_bytes(folder / src_name, _jpeg(image))
        src_kps = np.array([it.centre for it in items])
        src_box = _union_box(items)
        w, h = image.size
        for j in range(min(cfg.targets_per_source, cfg.n - pair_id)):
            for attempt in range(20):
                matrix = random_affine(rng, image.size, cfg, shrink=1.0 if attempt < 10 else 0.5)
                trg_kps = apply_affine(matrix, src_kps)
                inside = (trg_kps[:, 0] >= 2) & (trg_kps[:, 0] < w - 2) & (trg_kps[:, 1] >= 2) & (trg_kps[:, 1] < h - 2)
                if inside.sum() >= min(4, len(items)):
                    break
            trg_name = f"{kind}_{cfg.seed}_{i:05d}_t{j}.jpg"
            atomic_write_bytes(folder / trg_name, _jpeg(warp_image(image, matrix, bg)))
            x1, y1, x2, y2 = src_box
            corners = apply_affine(matrix, [(x1, y1), (x2, y1), (x2, y2), (x1, y2)])
            trg_box = (corners[:, 0].min(), corners[:, 1].min(), corners[:, 0].max(), corners[:, 1].max())
            pair_id += 1
            write_pair(root, split, {
                "pair_id": pair_id,
                "src_imname": src_name,
                "trg_imname": trg_name,
                "src_imsize": [w, h, 3],
                "trg_imsize": [w, h, 3],
                "src_bndbox": _clip_box(src_box, image.size),
                "trg_bndbox": _clip_box(trg_box, image.size),
                "category": kind,
                "src_kps": keypoints_to_json(src_kps[inside]),
                "trg_kps": keypoints_to_json(trg_kps[inside]),
                "kps_ids": [str(k) for k in np.flatnonzero(inside)],
                "kps_text": [items[k].text for k in np.flatnonzero(inside)],
                "transform": [[round(float(v), 6) for v in row] for row in matrix[:2]],
            })
    import PIL

    meta = {"config": cfg.to_config(), "pairs": pair_id, "split": split, "pillow": PIL.__version__,
            "provenance": provenance(cfg.to_config(), seed=cfg.seed)}
    atomic_write_text(root / "ocr_pairs.json", json.dumps(meta, indent=1, default=str), overwrite=True)
    logger.info(f"wrote {pair_id} OCR pairs ({n_sources} source images) to {root}")
    return root


def score_c_ocr(
    representation,
    n: int = 200,
    seed: int = 0,
    method: str = "argmax",
    alpha: float = 0.1,
    batch_size: int = 16,
    *,
    workdir: Optional[PathLike] = None,
    progress: bool = True,
):
    """C_ocr: generate ``n`` pairs (seeded) in a temporary directory and score them like C."""
    from lmms_ac.scores.correspondence import score_c

    with tempfile.TemporaryDirectory(prefix="lmms_ac_ocr_", dir=workdir) as tmp:
        make_ocr_pairs(tmp, n=n, seed=seed)
        return score_c(representation, tmp, "test", method=method, alpha=alpha, batch_size=batch_size, progress=progress)
