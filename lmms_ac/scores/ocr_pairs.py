"""The pairs of C_ocr (a correspondence score for text in images, beside C): a seeded renderer of
text documents and the writer of its pairs in the SPair-71k layout. The score is in
:mod:`lmms_ac.scores.ocr_score`.

Why: C is measured on SPair-71k (animals, vehicles, furniture): no keypoint correspondence data
exists for text, so neither A nor C sees what OCR-heavy benchmarks (TextVQA, ChartQA, DocVQA...)
need, and the law fits those worst. C_ocr fills that gap with synthetic pairs that need no download.

Cross-instance pairs (generator version 2): like SPair-71k's pairs of two different cats, a pair
here is two different renderings of the same text content:

* content: unique words or numbers, one of four kinds: ``words`` (lines of words), ``numbers``
  (prices, dates, percentages, decimals), ``table`` (ruled grid, header + numeric cells) and
  ``chart`` (axes with tick labels, category labels and a title);
* source and target each draw their own style: font (PIL's built-in font and the DejaVu faces
  matplotlib ships: sans, serif, mono, bold, italic), size, text/background/rule colours, canvas
  size; and their own layout: the words are re-flowed in another order with other margins and
  alignment, table cells are shuffled into a grid of another shape, chart categories are
  permuted, the value axis changes side and the title moves;
* keypoints sit on characters: for each text item both images mark the centre of the same
  character (a seeded index into the item, never a space), so a keypoint is only matched by
  finding the same text; only items rendered in both images count. The bounding box is the text
  region's (union of the item boxes) in each image.

So a representation must encode what the text says to match: the position is uninformative
(the score's position-only references show it). ``vary_style=False, vary_layout=False`` renders
the target exactly like the source (a control: raw pixel patches solve it).

Pairs are written in the SPair-71k layout (``JPEGImages/<kind>/*.jpg``, ``PairAnnotation/test``),
so ``score_c`` and ``lmms-ac score-c`` score them unchanged; the row's score name is ``C_ocr``.
The threshold is C's: ``alpha`` times the longer side of the text-region box. The generator is
deterministic for a seed (source ``i`` and its targets use a generator seeded by ``(seed, i)``, so
a smaller ``n`` gives a prefix of a larger one) for a given Pillow/FreeType build and font files;
the Pillow version and the fonts used are recorded.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from loguru import logger
from PIL import Image, ImageDraw, ImageFont

from lmms_ac.images import jpeg_bytes
from lmms_ac.io import PathLike, atomic_write_bytes, atomic_write_text, provenance
from lmms_ac.scores.spair import image_dir, keypoints_to_json, normalize_split, write_pair

GENERATOR_VERSION = 2
KINDS = ("words", "numbers", "table", "chart")

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
    vary_style: bool = True
    vary_layout: bool = True
    version: int = GENERATOR_VERSION

    def to_config(self) -> Dict[str, Any]:
        return {"generator": "lmms_ac.scores.ocr_pairs", **asdict(self)}  # hashed into score rows: never renamed


@dataclass
class TextItem:
    text: str
    box: Tuple[float, float, float, float]  # x1, y1, x2, y2 of the whole item
    point: Tuple[float, float] = (0.0, 0.0)  # centre of the keypoint character

    @property
    def centre(self) -> Tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2.0, (self.box[1] + self.box[3]) / 2.0)


# ----------------------------------------------------------------------------- styles
_FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
)


def available_fonts() -> List[Tuple[str, Optional[str]]]:
    """(name, path) of the fonts styles draw from: PIL's built-in font (path None) and the DejaVu
    faces bundled with matplotlib, found without importing it (missing files are skipped)."""
    import importlib.util

    fonts: List[Tuple[str, Optional[str]]] = [("pil-default", None)]
    spec = importlib.util.find_spec("matplotlib")
    for base in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(base) / "mpl-data" / "fonts" / "ttf"
        fonts += [(f.split(".")[0], str(folder / f)) for f in _FONT_FILES if (folder / f).is_file()]
        break
    return fonts


@dataclass(frozen=True)
class Style:
    font: str
    font_path: Optional[str]
    size: int  # base font size in pixels
    canvas: Tuple[int, int]
    bg: tuple
    fg: tuple
    accent: tuple

    def font_at(self, size: Optional[int] = None) -> ImageFont.ImageFont:
        size = int(size or self.size)
        if self.font_path is None:
            return ImageFont.load_default(size=size)
        return ImageFont.truetype(self.font_path, size)

    def to_json(self) -> Dict[str, Any]:
        return {
            "font": self.font,
            "size": self.size,
            "canvas": list(self.canvas),
            "bg": list(self.bg),
            "fg": list(self.fg),
        }


def _colours(rng: np.random.Generator) -> Tuple[tuple, tuple, tuple]:
    """(background, text, accent): mostly dark on light, sometimes light on dark or coloured."""
    u = rng.random()
    if u < 0.6:
        bg = tuple(int(v) for v in rng.integers(215, 256, 3))
        fg = tuple(int(v) for v in rng.integers(0, 70, 3))
    elif u < 0.85:
        bg = tuple(int(v) for v in rng.integers(0, 50, 3))
        fg = tuple(int(v) for v in rng.integers(200, 256, 3))
    else:  # saturated background, contrasting text
        bg = tuple(int(v) for v in rng.integers(60, 200, 3))
        fg = (255, 255, 255) if sum(bg) < 390 else (0, 0, 0)
    accent = tuple(int(v) for v in rng.integers(40, 220, 3))
    return bg, fg, accent


def random_style(rng: np.random.Generator, fonts: Sequence[Tuple[str, Optional[str]]], size_range=(14, 28)) -> Style:
    name, path = fonts[int(rng.integers(len(fonts)))]
    canvas = (int(rng.integers(320, 481)), int(rng.integers(256, 385)))
    bg, fg, accent = _colours(rng)
    return Style(name, path, int(rng.integers(*size_range)), canvas, bg, fg, accent)


# ----------------------------------------------------------------------------- content
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


def _unique_numbers(rng: np.random.Generator, n: int) -> List[str]:
    out: List[str] = []
    while len(out) < n:
        v = _number(rng)
        if v not in out:
            out.append(v)
    return out


def _words(rng: np.random.Generator, n: int) -> List[str]:
    words = list(rng.choice(_WORDS, size=n, replace=False))
    return [w.capitalize() if rng.random() < 0.3 else w.upper() if rng.random() < 0.1 else w for w in words]


def make_content(rng: np.random.Generator, kind: str) -> Dict[str, Any]:
    """The text of one source (what every rendering of it shows)."""
    if kind == "words":
        return {"items": _words(rng, 36)}
    if kind == "numbers":
        return {"items": _unique_numbers(rng, 36)}
    if kind == "table":
        n_rows, n_cols = int(rng.integers(3, 7)), int(rng.integers(3, 5))
        return {
            "header": [w.capitalize() for w in rng.choice(_WORDS, size=n_cols, replace=False)],
            "cells": _unique_numbers(rng, (n_rows - 1) * n_cols),
            "rows": n_rows,
        }
    if kind == "chart":
        n_y, n_x = int(rng.integers(4, 7)), int(rng.integers(4, 8))
        step = int(rng.choice([5, 10, 20, 25, 50, 100]))
        start = int(rng.integers(0, 12))
        if rng.random() < 0.6:
            labels = [_MONTHS[(start + i) % 12] for i in range(n_x)]
        else:
            first = int(rng.integers(1990, 2020))
            labels = [str(first + i) for i in range(n_x)]
        return {
            "title": " ".join(rng.choice(_WORDS, 2, replace=False)).title(),
            "yticks": [str(i * step) for i in range(n_y)],
            "xlabels": labels,
            "values": [float(v) for v in rng.uniform(0.1, 0.95, n_x)],
        }
    raise ValueError(f"unknown OCR pair kind {kind!r}; choose from {', '.join(KINDS)}")


# ----------------------------------------------------------------------------- rendering
def _put(draw: ImageDraw.ImageDraw, xy: Tuple[float, float], text: str, font, fill, char: int) -> TextItem:
    """Draw ``text`` with its left/ascender corner at ``xy``; the keypoint is character ``char``'s centre."""
    draw.text(xy, text, font=font, fill=fill, anchor="la")
    box = tuple(float(v) for v in draw.textbbox(xy, text, font=font, anchor="la"))
    k = min(char, len(text) - 1)
    x0 = xy[0] + draw.textlength(text[:k], font=font)
    cb = draw.textbbox((x0, xy[1]), text[k], font=font, anchor="la")
    return TextItem(text, box, ((cb[0] + cb[2]) / 2.0, (cb[1] + cb[3]) / 2.0))


def _put_centred(draw, centre: Tuple[float, float], text: str, font, fill, char: int) -> TextItem:
    x1, y1, x2, y2 = draw.textbbox((0, 0), text, font=font, anchor="la")
    return _put(draw, (centre[0] - (x1 + x2) / 2.0, centre[1] - (y1 + y2) / 2.0), text, font, fill, char)


def _flow(draw, rng, style: Style, tokens: Sequence[str], chars: Dict[str, int]) -> List[TextItem]:
    """Lay tokens out in lines inside the canvas margins (left, centred or right aligned)."""
    w, h = style.canvas
    font = style.font_at()
    margin = int(rng.integers(10, 40))
    gap = style.size * rng.uniform(0.6, 1.6)
    line_h = int(style.size * rng.uniform(1.4, 2.2))
    align = ("left", "centre", "right")[int(rng.integers(3))]
    lines: List[List[str]] = [[]]
    width = 0.0
    for tok in tokens:
        tw = draw.textlength(tok, font=font)
        if lines[-1] and width + gap + tw > w - 2 * margin:
            lines.append([])
            width = 0.0
        width += (gap if lines[-1] else 0.0) + tw
        lines[-1].append(tok)
    items: List[TextItem] = []
    fit = max(1, int((h - 2 * margin) // line_h))
    spare = max(0, fit - len(lines)) * line_h
    y = margin + int(rng.integers(0, spare + 21))  # the text block starts anywhere it fits
    for line in lines:
        if y + line_h > h - margin:
            break
        lw = sum(draw.textlength(t, font=font) for t in line) + gap * (len(line) - 1)
        x = margin if align == "left" else (w - lw) / 2.0 if align == "centre" else w - margin - lw
        for tok in line:
            items.append(_put(draw, (x, y), tok, font, style.fg, chars[tok]))
            x += draw.textlength(tok, font=font) + gap
        y += line_h
    return items


def _table(
    draw, rng, style: Style, header: Sequence[str], cells: Sequence[str], n_cols: int, chars: Dict[str, int]
) -> List[TextItem]:
    w, h = style.canvas
    n_rows = 1 + math.ceil(len(cells) / n_cols)
    x0, y0 = int(rng.integers(8, 30)), int(rng.integers(8, 30))
    cw, ch = (w - 2 * x0) / n_cols, min((h - 2 * y0) / n_rows, 52.0)
    size = int(min(style.size, max(10, ch * 0.5)))
    font = style.font_at(size)
    while size > 9 and max(draw.textlength(t, font=font) for t in list(header) + list(cells)) > cw - 6:
        size -= 1
        font = style.font_at(size)
    for r in range(n_rows + 1):
        draw.line([(x0, y0 + r * ch), (x0 + n_cols * cw, y0 + r * ch)], fill=style.accent, width=1 + (r <= 1))
    for c in range(n_cols + 1):
        draw.line([(x0 + c * cw, y0), (x0 + c * cw, y0 + n_rows * ch)], fill=style.accent, width=1)
    items = []
    for i, text in enumerate(list(header) + list(cells)):
        r, c = (0, i) if i < len(header) else (1 + (i - len(header)) // n_cols, (i - len(header)) % n_cols)
        if draw.textlength(text, font=font) > cw - 4:
            continue  # does not fit its cell even at the smallest size: not drawn, no keypoint
        items.append(_put_centred(draw, (x0 + (c + 0.5) * cw, y0 + (r + 0.5) * ch), text, font, style.fg, chars[text]))
    return items


def _chart(
    draw,
    rng,
    style: Style,
    content: Dict[str, Any],
    order: Sequence[int],
    horizontal: bool,
    invert: bool,
    far_axis: bool,
    title_top: bool,
    chars: Dict[str, int],
    cats_far: bool = False,
) -> List[TextItem]:
    """A line chart. ``horizontal``: categories down the side and values along the bottom (else
    categories along the bottom); ``invert``: values grow the other way; ``far_axis``: the value
    axis on the right (vertical) or top (horizontal); ``title_top``: title above or below;
    ``cats_far``: category labels inside the plot along its far edge (top / right)."""
    w, h = style.canvas
    font = style.font_at(max(10, int(style.size * 0.75)))
    tfont = style.font_at(font.size + 4)
    side, tmargin = int(rng.integers(55, 75)), int(rng.integers(35, 50))
    left, right = side, w - int(rng.integers(20, 40))
    top, bottom = tmargin, h - int(rng.integers(35, 50))
    if not title_top:
        top, bottom = int(rng.integers(30, 45)), h - tmargin - 30
    if far_axis and not horizontal:
        left, right = w - right, w - left
    if far_axis and horizontal:
        top, bottom = top + 25, bottom
    title_y = top / 2 - (10 if far_axis and horizontal else 0) if title_top else h - tmargin / 2 - 5
    items = [
        _put_centred(
            draw,
            ((left + right) / 2, max(tfont.size / 2 + 2, title_y)),
            content["title"],
            tfont,
            style.fg,
            chars[content["title"]],
        )
    ]
    draw.rectangle([left, top, right, bottom], outline=style.fg, width=1)
    ticks = content["yticks"]
    fr = [i / (len(ticks) - 1) for i in range(len(ticks))]
    if invert:
        fr = [1 - f for f in fr]
    labels = [content["xlabels"][i] for i in order]
    values = [content["values"][i] for i in order]
    cats = [(i + 0.5) / len(labels) for i in range(len(labels))]
    if not horizontal:
        ax = right if far_axis else left
        for lab, f in zip(ticks, fr):
            y = bottom - f * (bottom - top)
            tw = draw.textlength(lab, font=font)
            x = ax + 8 + tw / 2 if far_axis else ax - 8 - tw / 2
            items.append(_put_centred(draw, (x, y), lab, font, style.fg, chars[lab]))
        cy = top + 6 + font.size / 2 if cats_far else bottom + 6 + font.size / 2
        for c, lab in zip(cats, labels):
            items.append(_put_centred(draw, (left + c * (right - left), cy), lab, font, style.fg, chars[lab]))
        pts = [
            (left + c * (right - left), bottom - ((1 - v) if invert else v) * (bottom - top))
            for c, v in zip(cats, values)
        ]
    else:
        ay = top if far_axis else bottom
        for lab, f in zip(ticks, fr):
            x = left + f * (right - left)
            y = ay - 6 - font.size / 2 if far_axis else ay + 6 + font.size / 2
            items.append(_put_centred(draw, (x, y), lab, font, style.fg, chars[lab]))
        for c, lab in zip(cats, labels):
            tw = draw.textlength(lab, font=font)
            cx = right - 6 - tw / 2 if cats_far else left - 6 - tw / 2
            items.append(_put_centred(draw, (cx, top + c * (bottom - top)), lab, font, style.fg, chars[lab]))
        pts = [
            (left + ((1 - v) if invert else v) * (right - left), top + c * (bottom - top)) for c, v in zip(cats, values)
        ]
    draw.line(pts, fill=style.accent, width=2)
    return items


def render(
    rng: np.random.Generator, kind: str, content: Dict[str, Any], style: Style, chars: Dict[str, int], shuffle: bool
) -> Tuple[Image.Image, List[TextItem], Dict[str, Any]]:
    """One rendering of ``content``: (image, drawn items, layout description). ``shuffle`` draws a new
    arrangement (order of items, table shape, chart axis side...); else the canonical one."""
    image = Image.new("RGB", style.canvas, style.bg)
    draw = ImageDraw.Draw(image)
    layout: Dict[str, Any] = {}
    if kind in ("words", "numbers"):
        tokens = list(content["items"])
        if shuffle:
            tokens = [tokens[i] for i in rng.permutation(len(tokens))]
        items = _flow(draw, rng, style, tokens, chars)
    elif kind == "table":
        texts = list(content["header"]) + list(content["cells"])
        n_cols = len(content["header"])
        if shuffle:  # every cell moves, the header words too; the grid changes shape
            texts = [texts[i] for i in rng.permutation(len(texts))]
            n_cols = int(rng.integers(2, 6))
        layout["columns"] = n_cols
        items = _table(draw, rng, style, texts[:n_cols], texts[n_cols:], n_cols, chars)
    else:
        n = len(content["xlabels"])
        order = list(rng.permutation(n)) if shuffle else list(range(n))
        flags = [bool(rng.random() < 0.5) for _ in range(5)] if shuffle else [False, False, False, True, False]
        horizontal, invert, far_axis, title_top, cats_far = flags
        layout.update(
            order=[int(i) for i in order],
            horizontal=horizontal,
            inverted=invert,
            far_axis=far_axis,
            title="top" if title_top else "bottom",
            categories="far" if cats_far else "near",
        )
        items = _chart(draw, rng, style, content, order, horizontal, invert, far_axis, title_top, chars, cats_far)
    return image, items, layout


def _all_texts(kind: str, content: Dict[str, Any]) -> List[str]:
    if kind in ("words", "numbers"):
        return list(content["items"])
    if kind == "table":
        return list(content["header"]) + list(content["cells"])
    return [content["title"]] + list(content["yticks"]) + list(content["xlabels"])


def _keypoint_chars(rng: np.random.Generator, texts: Sequence[str]) -> Dict[str, int]:
    """A seeded character index per text, never a space."""
    out = {}
    for t in texts:
        choices = [i for i, ch in enumerate(t) if not ch.isspace()] or [0]
        out[t] = int(choices[int(rng.integers(len(choices)))])
    return out


def _union_box(items: Sequence[TextItem], pad: float = 4.0) -> Tuple[float, float, float, float]:
    boxes = np.array([it.box for it in items])
    return (boxes[:, 0].min() - pad, boxes[:, 1].min() - pad, boxes[:, 2].max() + pad, boxes[:, 3].max() + pad)


def _clip_box(box, size) -> List[float]:
    w, h = size
    x1, y1, x2, y2 = box
    return [round(max(0.0, x1), 2), round(max(0.0, y1), 2), round(min(float(w), x2), 2), round(min(float(h), y2), 2)]


def _jpeg(image: Image.Image) -> bytes:
    return jpeg_bytes(image, quality=95, subsampling=0)  # 4:4:4 chroma: part of the pairs' bytes


# ----------------------------------------------------------------------------- the dataset
def make_ocr_pairs(
    root: PathLike, n: int = 200, seed: int = 0, *, split: str = "test", config: Optional[OcrPairsConfig] = None
) -> Path:
    """Write ``n`` cross-instance text-image pairs in the SPair-71k layout under ``root`` (refuses to
    overwrite)."""
    cfg = config or OcrPairsConfig(n=n, seed=seed)
    if cfg.n < 1:
        raise ValueError(f"n must be >= 1, got {cfg.n}")
    root = Path(root)
    split = normalize_split(split)
    ann = root / "PairAnnotation" / split
    if ann.is_dir() and any(ann.glob("*.json")):
        raise FileExistsError(f"{ann} already holds pair annotations; choose an empty directory")
    fonts = available_fonts()
    n_sources = math.ceil(cfg.n / cfg.targets_per_source)
    pair_id = 0
    used_fonts = set()
    for i in range(n_sources):
        rng = np.random.default_rng([cfg.seed, i])
        kind = KINDS[i % len(KINDS)]
        content = make_content(rng, kind)
        chars = _keypoint_chars(rng, _all_texts(kind, content))
        src_style = random_style(rng, fonts)
        image, src_items, src_layout = render(rng, kind, content, src_style, chars, shuffle=cfg.vary_layout)
        used_fonts.add(src_style.font)
        src_name = f"{kind}_{cfg.seed}_{i:05d}_src.jpg"
        folder = image_dir(root, kind)
        atomic_write_bytes(folder / src_name, _jpeg(image))
        src_by_text = {it.text: it for it in src_items}
        for j in range(min(cfg.targets_per_source, cfg.n - pair_id)):
            trg_style = random_style(rng, fonts) if cfg.vary_style else src_style
            trg_image, trg_items, layout = render(rng, kind, content, trg_style, chars, shuffle=cfg.vary_layout)
            if not cfg.vary_layout and not cfg.vary_style:
                trg_image, trg_items = image, src_items  # the exact rendering: a control
            used_fonts.add(trg_style.font)
            common = [it for it in trg_items if it.text in src_by_text]
            if len(common) > cfg.max_keypoints:
                keep = np.sort(rng.choice(len(common), cfg.max_keypoints, replace=False))
                common = [common[k] for k in keep]
            trg_name = f"{kind}_{cfg.seed}_{i:05d}_t{j}.jpg"
            atomic_write_bytes(folder / trg_name, _jpeg(trg_image))
            pair_id += 1
            write_pair(
                root,
                split,
                {
                    "pair_id": pair_id,
                    "src_imname": src_name,
                    "trg_imname": trg_name,
                    "src_imsize": [*src_style.canvas, 3],
                    "trg_imsize": [*trg_style.canvas, 3],
                    "src_bndbox": _clip_box(_union_box(src_items), src_style.canvas),
                    "trg_bndbox": _clip_box(_union_box(trg_items), trg_style.canvas),
                    "category": kind,
                    "src_kps": keypoints_to_json([src_by_text[it.text].point for it in common]),
                    "trg_kps": keypoints_to_json([it.point for it in common]),
                    "kps_ids": [str(k) for k in range(len(common))],
                    "kps_text": [it.text for it in common],
                    "kps_char": [chars[it.text] for it in common],
                    "src_style": src_style.to_json(),
                    "trg_style": trg_style.to_json(),
                    "src_layout": src_layout,
                    "trg_layout": layout,
                },
            )
    import PIL

    meta = {
        "config": cfg.to_config(),
        "pairs": pair_id,
        "split": split,
        "pillow": PIL.__version__,
        "fonts": sorted(used_fonts),
        "provenance": provenance(cfg.to_config(), seed=cfg.seed),
    }
    atomic_write_text(root / "ocr_pairs.json", json.dumps(meta, indent=1, default=str), overwrite=True)
    logger.info(f"wrote {pair_id} OCR pairs ({n_sources} source images) to {root}")
    return root
