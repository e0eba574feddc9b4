"""A score: cross-modal alignment of a vision representation (docs/METHODS.md#a-scores).

``caption_ll`` (the paper's definition, the default): with encoder, stage-1 projector and LLM all
frozen, A = mean over N seeded image-caption pairs of LLaVA-558K of (1/T) sum_t log P(y_t | f(I), y_<t),
scoring only the caption tokens. The prompt is stage-1 pre-training's ``plain`` format: the image
tokens, then the caption (LLaVA's ``preprocess_plain``), tokenized as the checkpoint format's own code
does (original LLaVA: ``tokenizer_image_token``, so the caption's first word keeps its leading "▁").
Scored tokens: the caption's, not the separator (``"\n"``) that ``preprocess_plain`` appends and trains
on; ``score_separator=True`` (``score-a --score-separator``) scores caption + separator, LLaVA's
stage-1 training loss.

``embed`` (the published code's variant): per image, the mean over the candidate's projected
visual tokens of the best cosine similarity to a reference model's projected tokens of the same
image, averaged over images and over the reference models (CLIP@224 and CLIP@336 stage-1 models in
the law paper's release). As published it is computed per benchmark, on 100 seeded images of that
benchmark's own data (``lmms_ac.scores.benchmark_images``), one score ``A_embed_<benchmark>`` each
(the columns of the bundled law-v1 data); on LLaVA-558K images it is reported as ``A_embed``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from loguru import logger
from PIL import Image
from tqdm import tqdm

from lmms_ac.vlm.prompts import IMAGE_TOKEN, PLAIN_SEPARATOR


@dataclass(frozen=True)
class CaptionPair:
    id: str
    image_path: Path
    caption: str


def read_llava_pretrain(annotations: str, image_root: str) -> List[CaptionPair]:
    """Records of ``blip_laion_cc_sbu_558k.json``: ``id``, ``image`` (relative path), ``conversations``
    = [{from: human, value: '<image>\\n...'}, {from: gpt, value: caption}]."""
    path = Path(annotations)
    if not path.is_file():
        raise FileNotFoundError(
            f"caption file {annotations} not found; pass the LLaVA-558K json (blip_laion_cc_sbu_558k.json)"
        )
    try:
        with open(path, encoding="utf-8") as fh:
            records = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"caption file {annotations} is not valid JSON at line {err.lineno} column {err.colno} ({err.msg}); "
            "it may be cut short: download blip_laion_cc_sbu_558k.json again"
        ) from None
    except UnicodeDecodeError as err:
        raise ValueError(f"caption file {annotations} is not UTF-8 JSON ({err.reason} at byte {err.start})") from None
    if not isinstance(records, list) or not records:
        raise ValueError(f"{annotations} holds no records; expected a JSON list of LLaVA-558K records")
    pairs = []
    for i, rec in enumerate(records):
        try:
            turns = rec["conversations"]
            caption = next(t["value"] for t in turns if isinstance(t, dict) and t.get("from") == "gpt")
            if not isinstance(caption, str) or not isinstance(rec["image"], str):
                raise TypeError("the gpt turn's value and the image must be strings")
            pairs.append(CaptionPair(str(rec.get("id", i)), Path(image_root) / rec["image"], caption.strip()))
        except (KeyError, StopIteration, TypeError, AttributeError) as err:
            raise ValueError(
                f"{annotations} record {i} is not in the LLaVA-558K format (id, image, conversations with a gpt turn): "
                f"{err}"
            ) from err
    return pairs


def sample_pairs(pairs: Sequence[CaptionPair], n: int, seed: int) -> List[CaptionPair]:
    """``n`` pairs drawn without replacement by a seeded RNG (all of them when fewer); ``n`` must be >= 1."""
    if n < 1:
        raise ValueError(f"the number of caption pairs must be >= 1, got {n}; pass --n 1 or more")
    if n >= len(pairs):
        return list(pairs)
    return random.Random(seed).sample(list(pairs), n)


def open_image(path: Path) -> Image.Image:
    """An image of the caption data, decoded now; a missing or undecodable file is an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(
            f"image {path} not found; --images must be the folder the json's 'image' paths are relative to"
        )
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(
            f"image {path} cannot be decoded ({type(err).__name__}: {err}); replace it or drop its record"
        ) from err


def caption_loglikelihood(
    vlm, pairs: Sequence[CaptionPair], batch_size: int = 8, show_progress: bool = True, score_separator: bool = False
) -> Dict[str, float]:
    """Per-pair mean caption-token log-likelihood (the A score is their mean); with ``score_separator``
    the plain template's trailing separator is scored too."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not pairs:
        raise ValueError("no caption pairs to score")
    tail = PLAIN_SEPARATOR if score_separator else ""
    per_pair: Dict[str, float] = {}
    bar = tqdm(total=len(pairs), desc="A score", disable=not show_progress)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        images = [[open_image(p.image_path)] for p in chunk]
        token_lps = vlm.token_logprobs([IMAGE_TOKEN] * len(chunk), [p.caption + tail for p in chunk], images)
        for pair, (lp, _) in zip(chunk, token_lps):
            per_pair[pair.id] = float(lp.mean())
        bar.update(len(chunk))
    bar.close()
    return per_pair


def a_embed_name(benchmark: Optional[str] = None) -> str:
    """Score name of A_embed: ``A_embed_<benchmark>`` on a benchmark's images, ``A_embed`` on LLaVA-558K's."""
    if benchmark is None:
        return "A_embed"
    if not benchmark or any(c in benchmark for c in ",/ \t"):
        raise ValueError(f"benchmark name {benchmark!r} cannot be part of a score name")
    return f"A_embed_{benchmark}"


def score_a_embed(
    vlm,
    references: Sequence,
    benchmark: Optional[str] = None,
    n: int = 100,
    seed: int = 0,
    batch_size: int = 8,
    images: Optional[Sequence[Image.Image]] = None,
) -> Dict[str, object]:
    """A_embed of ``vlm`` on ``n`` seeded images of lmms-eval task ``benchmark`` (or on ``images``):
    ``{"score": name, "value", "n"}``."""
    if images is None:
        if benchmark is None:
            raise ValueError("score_a_embed needs a benchmark task name or the images")
        from lmms_ac.scores.benchmark_images import benchmark_images

        images = benchmark_images(benchmark, n, seed)
    return {
        "score": a_embed_name(benchmark),
        "value": embedding_alignment(vlm, references, list(images), batch_size),
        "n": len(images),
    }


@torch.no_grad()
def embedding_alignment(vlm, references: Sequence, images: Sequence[Image.Image], batch_size: int = 8) -> float:
    """Mean over images and references of mean_token max_ref_token cos(candidate token, reference token)."""
    if not references:
        raise ValueError(
            "A_embed needs at least one reference model (the law paper uses CLIP@224 and CLIP@336 stage-1 models)"
        )
    if not images:
        raise ValueError("A_embed needs at least one image")
    totals = []
    for ref in references:
        sims = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            cand = vlm.encode_images(chunk)
            refs = ref.encode_images(chunk)
            for c, r in zip(cand, refs):
                c = torch.nn.functional.normalize(c.float(), dim=-1)
                r = torch.nn.functional.normalize(r.float().to(c.device), dim=-1)
                sims.append(float((c @ r.T).max(dim=1).values.mean()))
        totals.append(sum(sims) / len(sims))
    return sum(totals) / len(totals)


def score_a(
    vlm,
    annotations: str,
    image_root: str,
    n: int = 100,
    seed: int = 0,
    batch_size: int = 8,
    score_separator: bool = False,
) -> Dict[str, object]:
    """The paper's A score over ``n`` seeded LLaVA-558K pairs; returns value, n and per-pair values."""
    pairs = sample_pairs(read_llava_pretrain(annotations, image_root), n, seed)
    if len(pairs) < n:
        logger.warning(f"only {len(pairs)} caption pairs available; A is averaged over all of them instead of {n}")
    per_pair = caption_loglikelihood(vlm, pairs, batch_size, score_separator=score_separator)
    value = sum(per_pair.values()) / len(per_pair)
    return {"value": value, "n": len(per_pair), "per_pair": per_pair}
