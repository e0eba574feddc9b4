"""One pass over an SPair-layout set: each image is letterboxed, encoded and run through the MLLM
once; its states at every requested layer feed C@L, reconstruction and attention balance together.

Images are processed category by category (SPair pairs never cross categories), so only one
category's features are held at a time (per image: the encoder tokens plus every requested layer,
L2-normalised, on the model's device; in half precision when the model runs in it).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from loguru import logger
from tqdm.auto import tqdm

from lmms_ac.layers.extraction import NEUTRAL_PROMPTS, LayerExtractor, encoder_features
from lmms_ac.layers.metrics import (
    ENCODER,
    AttentionBalance,
    LayerCorrespondence,
    LinearReconstruction,
    split_train,
)
from lmms_ac.scores.correspondence import chance_level
from lmms_ac.scores.methods import CORRESPONDENCE_METHODS
from lmms_ac.scores.spair import PathLike, SPairPair, load_pairs


@dataclass
class LayerReport:
    """Per-layer values (keys are layer numbers; 0 = projector output) and their references."""

    n_layers: int
    layers: List[int]
    c: Dict[int, float] = field(default_factory=dict)
    c_encoder: float = float("nan")
    c_chance: float = float("nan")
    c_per_category: Dict[str, Dict[str, float]] = field(default_factory=dict)
    recon: Dict[int, float] = field(default_factory=dict)
    attn_img: Dict[int, float] = field(default_factory=dict)
    attn_uniform: float = float("nan")
    n_pairs: int = 0
    n_keypoints: int = 0
    n_images: int = 0
    forwards: int = 0
    recon_split: Dict[str, int] = field(default_factory=dict)
    attn_images: int = 0
    config: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        for key in ("c", "recon", "attn_img"):
            out[key] = {str(k): v for k, v in out[key].items()}
        return out

    @classmethod
    def from_rows(cls, n_layers: int, layers: Sequence[int], rows: Dict[str, Dict[str, str]]) -> "LayerReport":
        """Rebuild a report from score-store rows (``{score: row}``, as ``record_score`` wrote them)."""
        import json

        report = cls(n_layers=n_layers, layers=list(layers))
        details: Dict[str, Any] = {}
        for name, row in rows.items():
            value = float(row["value"])
            details = json.loads(row.get("details") or "{}") or details
            kind, _, layer = name.partition("@")
            if layer == "enc":
                report.c_encoder = value
            elif kind == "C":
                report.c[int(layer[1:])] = value
            elif kind == "recon":
                report.recon[int(layer[1:])] = value
            elif kind == "attn_img":
                report.attn_img[int(layer[1:])] = value
        report.c_chance = float(details.get("c_chance", float("nan")))
        report.attn_uniform = float(details.get("attn_uniform", float("nan")))
        for key in ("n_images", "n_pairs", "n_keypoints", "attn_images", "forwards"):
            setattr(report, key, int(details.get(key, 0) or 0))
        report.recon_split = details.get("recon_split") or {}
        return report

    def scores(self) -> List[Tuple[str, float, int]]:
        """(score name, value, n) rows for the scores store: ``C@L<l>``, ``C@enc``, ``recon@L<l>``,
        ``attn_img@L<l>``."""
        rows: List[Tuple[str, float, int]] = []
        if self.c:
            rows.append(("C@enc", self.c_encoder, self.n_pairs))
            rows += [(f"C@L{k}", v, self.n_pairs) for k, v in sorted(self.c.items())]
        rows += [(f"recon@L{k}", v, self.recon_split.get("test_images", 0)) for k, v in sorted(self.recon.items())]
        rows += [(f"attn_img@L{k}", v, self.attn_images) for k, v in sorted(self.attn_img.items())]
        return rows


def expected_scores(layers: Sequence[int], *, correspondence: bool, reconstruction: bool, attention: bool) -> List[str]:
    """The score names a run with these switches records (the names ``LayerReport.scores`` gives)."""
    names: List[str] = []
    if correspondence:
        names += ["C@enc"] + [f"C@L{x}" for x in layers]
    if reconstruction:
        names += [f"recon@L{x}" for x in layers]
    if attention:
        names += [f"attn_img@L{x}" for x in layers if x >= 1]
    return names


def _group(pairs: Sequence[SPairPair]) -> "OrderedDict[str, List[SPairPair]]":
    groups: "OrderedDict[str, List[SPairPair]]" = OrderedDict()
    for pair in pairs:
        groups.setdefault(pair.category, []).append(pair)
    return groups


def list_images(root: PathLike, limit: Optional[int] = None) -> List[Path]:
    """Image files under ``root`` (recursive, sorted), the first ``limit`` of them."""
    folder = Path(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"--images {root} is not a directory")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".bmp"))
    if not files:
        raise ValueError(f"no .jpg/.jpeg/.png/.webp/.bmp images under {root}")
    return files[:limit] if limit else files


def run_layers(
    vlm,
    spair_root: Optional[PathLike],
    split: str = "test",
    *,
    layers: Sequence[int],
    limit: Optional[int] = None,
    method: str = "argmax",
    alpha: float = 0.1,
    batch_size: int = 8,
    prompts: Sequence[str] = NEUTRAL_PROMPTS,
    prompt_format: str = "auto",
    system_prompt: Optional[str] = None,
    pad: str = "zero",
    correspondence: bool = True,
    reconstruction: bool = True,
    attention: bool = True,
    recon_tokens: int = 64,
    recon_ridge: float = 1e-3,
    seed: int = 0,
    num_workers: int = 2,
    progress: bool = True,
    bank_device: Optional[str] = None,
    images: Optional[Sequence[Path]] = None,
) -> LayerReport:
    """C@L, reconstruction and attention balance of ``vlm`` over the images of an SPair-layout set.
    ``bank_device`` holds one category's features for matching (default: the model's device). With
    ``images`` instead of ``spair_root`` (no pairs), only reconstruction and attention are computed."""
    CORRESPONDENCE_METHODS.get(method)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not (correspondence or reconstruction or attention):
        raise ValueError("nothing to compute: C, reconstruction and attention are all switched off")
    start = time.perf_counter()
    if (spair_root is None) == (images is None):
        raise ValueError("give either an SPair root or a list of images")
    if images is not None:
        correspondence = False
        if not (reconstruction or attention):
            raise ValueError("without SPair pairs only reconstruction and attention can be computed")
    pairs = load_pairs(spair_root, split, limit=limit) if images is None else []
    extractor = LayerExtractor(
        vlm,
        layers,
        prompts=prompts,
        prompt_format=prompt_format,
        system_prompt=system_prompt,
        pad=pad,
        attention=attention,
    )
    layers = extractor.layers
    if images is None:
        groups = _group(pairs)
        images = list(OrderedDict.fromkeys(p for pair in pairs for p in (pair.src_path, pair.trg_path)))
        needed_by_group = {
            c: list(OrderedDict.fromkeys(p for pair in ps for p in (pair.src_path, pair.trg_path)))
            for c, ps in groups.items()
        }
    else:
        images = list(OrderedDict.fromkeys(Path(p) for p in images))
        groups = OrderedDict([("images", [])])
        needed_by_group = {"images": images}
    corr = LayerCorrespondence([ENCODER, *layers], extractor.grid, method, alpha) if correspondence else None
    recon = (
        LinearReconstruction(
            layers, split_train(images, seed), tokens_per_image=recon_tokens, ridge=recon_ridge, seed=seed
        )
        if reconstruction
        else None
    )
    balance = AttentionBalance() if attention and extractor.attn_layers else None
    low = {torch.float16, torch.bfloat16}
    store_dtype = vlm.dtype if vlm.dtype in low else torch.float32

    bar = tqdm(total=len(images), unit="img", desc=f"layers 0..{extractor.n_layers}", disable=not progress)
    seen = 0
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for category, cat_pairs in groups.items():
            needed = needed_by_group[category]
            batches = [needed[i : i + batch_size] for i in range(0, len(needed), batch_size)]
            bank: Dict[Path, Tuple[Any, Dict[Any, torch.Tensor]]] = {}
            pending = list(cat_pairs)
            bar.set_postfix_str(category)
            loading = [pool.submit(extractor.load, p) for p in batches[0]]
            for i, batch in enumerate(batches):
                loaded = [f.result() for f in loading]
                if i + 1 < len(batches):  # decode the next batch while this one runs
                    loading = [pool.submit(extractor.load, p) for p in batches[i + 1]]
                outputs = extractor.extract([px for px, _ in loaded], first_index=seen)
                for path, (_, box), out in zip(batch, loaded, outputs):
                    if recon is not None:
                        recon.add(path, seen, out.encoder, out.states)
                    if balance is not None:
                        balance.add(out.attention, out.uniform_share)
                    if corr is not None:
                        feats = {ENCODER: encoder_features(vlm.vision, out.encoder)}
                        feats.update({k: F.normalize(v.float(), dim=-1) for k, v in out.states.items()})
                        feats = {k: v.to(device=bank_device or v.device, dtype=store_dtype) for k, v in feats.items()}
                        bank[path] = (box, feats)
                    seen += 1
                if corr is not None:
                    ready = [p for p in pending if p.src_path in bank and p.trg_path in bank]
                    pending = [p for p in pending if not (p.src_path in bank and p.trg_path in bank)]
                    corr.match(ready, bank)
                bar.update(len(batch))
            del bank
    bar.close()

    report = LayerReport(n_layers=extractor.n_layers, layers=layers, n_images=len(images), forwards=extractor.forwards)
    if corr is not None:
        results = corr.results()
        report.c = {k: results[k].overall for k in layers}
        report.c_encoder = results[ENCODER].overall
        report.c_chance = chance_level(pairs, extractor.grid, alpha)
        report.n_pairs = results[ENCODER].n_pairs
        report.n_keypoints = results[ENCODER].n_keypoints
        report.c_per_category = {("encoder" if k == ENCODER else f"L{k}"): r.per_category for k, r in results.items()}
    if recon is not None:
        rec = recon.results()
        report.recon = {k: r.cosine for k, r in rec.items()}
        any_r = next(iter(rec.values()))
        report.recon_split = {
            "train_images": any_r.train_images,
            "test_images": any_r.test_images,
            "train_tokens": any_r.train_tokens,
            "test_tokens": any_r.test_tokens,
        }
    if balance is not None:
        report.attn_img, report.attn_uniform, report.attn_images = balance.results()
    report.seconds = time.perf_counter() - start
    logger.info(
        f"layers: {len(images)} images in {extractor.forwards} forwards, {report.n_pairs} pairs, {report.seconds:.1f}s"
    )
    return report
