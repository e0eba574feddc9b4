"""Benchmark of the C score (not a test): pairs/s, per-image feature reuse, and the naive baseline.

Generates an SPair-layout fixture (C_ocr text pairs: two targets per source image), scores N pairs
and 2N pairs over the SAME images (the N pairs plus each one reversed) with a small random ViT,
and prints encoder passes for each (the ratio must be ~1.0, not 2.0); then scores the same N pairs
the naive way (both images encoded for every pair, same batch size) and prints the speed ratio.

    python bench/bench_score_c.py [--n 100] [--batch-size 16] [--device cpu|cuda] [--size 224]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from typing import List, Sequence

import torch
from loguru import logger

from lmms_ac.scores.correspondence import CScoreResult, FeatureExtractor, match_pairs, score_pairs, summarize
from lmms_ac.scores.ocr_pairs import make_ocr_pairs
from lmms_ac.scores.spair import SPairPair, load_pairs
from lmms_ac.vision.base import ImageSpec, VisionRepresentation


class TinyViT(VisionRepresentation):
    """A small random-weight ViT (patch embedding + pre-norm transformer blocks), seeded."""

    def __init__(self, size: int = 224, patch: int = 16, dim: int = 192, depth: int = 4, heads: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.spec = f"tinyvit(size={size},patch={patch},dim={dim},depth={depth})"
        self.image_spec = ImageSpec(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        self.patch_size, self.hidden_size = patch, dim
        self.grid = (size // patch, size // patch)
        self.embed = torch.nn.Conv2d(3, dim, patch, stride=patch)
        self.pos = torch.nn.Parameter(torch.randn(1, self.num_tokens, dim) * 0.02)
        layer = torch.nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.embed(pixel_values).flatten(2).transpose(1, 2) + self.pos
        return self.check_tokens(self.blocks(x))


def naive_score(
    rep: VisionRepresentation, pairs: Sequence[SPairPair], batch_size: int, method: str = "argmax"
) -> CScoreResult:
    """Per-pair extraction: both images of every pair are decoded and encoded, with the same
    batching and decode prefetching as the real path; only the reuse is missing."""
    start = time.perf_counter()
    ex = FeatureExtractor(rep, batch_size=batch_size + batch_size % 2)  # even: pairs never straddle batches
    flat = [p for pair in pairs for p in (pair.src_path, pair.trg_path)]
    outcomes, done = [], 0
    for feats in ex.iter_encode_list(flat):
        for j in range(0, len(feats), 2):
            pair = pairs[done]
            bank = {pair.src_path: feats[j], pair.trg_path: feats[j + 1]}
            outcomes += match_pairs([pair], bank, ex.grid, method=method)
            done += 1
    if rep.device.type == "cuda":
        torch.cuda.synchronize()
    return summarize(
        outcomes,
        encoder_passes=ex.images_encoded,
        encoder_calls=ex.calls,
        seconds=time.perf_counter() - start,
        method=method,
    )


def reversed_pairs(pairs: Sequence[SPairPair]) -> List[SPairPair]:
    return [
        SPairPair(p.name + "_rev", p.category, p.trg_path, p.src_path, p.trg_kps, p.src_kps, p.trg_bbox, p.src_bbox)
        for p in pairs
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="pairs in the N run (2N run doubles them)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3, help="best of R timings")
    args = ap.parse_args()
    logger.remove()
    logger.add(lambda m: None)  # keep the output to the table

    rep = TinyViT(size=args.size).eval().requires_grad_(False).to(args.device)
    with tempfile.TemporaryDirectory(prefix="bench_c_") as tmp:
        t0 = time.perf_counter()
        make_ocr_pairs(tmp, n=args.n, seed=0)
        gen_s = time.perf_counter() - t0
        pairs = load_pairs(tmp, "test")
        doubled = list(pairs) + reversed_pairs(pairs)
        n_images = len({p for pair in pairs for p in (pair.src_path, pair.trg_path)})

        runs = {
            "reuse N": (len(pairs), lambda: score_pairs(rep, pairs, batch_size=args.batch_size, progress=False)),
            "reuse 2N": (len(doubled), lambda: score_pairs(rep, doubled, batch_size=args.batch_size, progress=False)),
            "naive N": (len(pairs), lambda: naive_score(rep, pairs, args.batch_size)),
            "naive 2N": (len(doubled), lambda: naive_score(rep, doubled, args.batch_size)),
        }
        score_pairs(rep, pairs[: args.batch_size], batch_size=args.batch_size, progress=False)  # warm-up
        results = {}
        for _ in range(args.repeats):  # interleaved, best of R: robust to a busy machine
            for name, (_, fn) in runs.items():
                r = fn()
                if name not in results or r.seconds < results[name].seconds:
                    results[name] = r
        one, two, naive, naive2 = (results[k] for k in runs)

    assert math.isclose(one.overall, naive.overall, abs_tol=1e-9), (one.overall, naive.overall)
    print(f"device={args.device} encoder={rep.spec} batch={args.batch_size} torch threads={torch.get_num_threads()}")
    print(f"fixture: {len(pairs)} pairs over {n_images} images (generated in {gen_s:.1f}s)")
    print(f"{'run':<22}{'pairs':>7}{'passes':>8}{'calls':>7}{'seconds':>9}{'pairs/s':>9}{'C %':>8}")
    for name, (n, _) in runs.items():
        r = results[name]
        print(
            f"{name:<22}{n:>7}{r.encoder_passes:>8}{r.encoder_calls:>7}{r.seconds:>9.2f}"
            f"{n / r.seconds:>9.1f}{r.overall:>8.2f}"
        )
    print(
        f"encoder passes 2N / N (reuse): {two.encoder_passes / one.encoder_passes:.2f}   "
        f"(naive: {naive2.encoder_passes / naive.encoder_passes:.2f})"
    )
    print(f"speed-up of reuse over naive: N {naive.seconds / one.seconds:.2f}x, 2N {naive2.seconds / two.seconds:.2f}x")


if __name__ == "__main__":
    main()
