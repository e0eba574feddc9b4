"""The run behind ``lmms-ac score-a``: the A score (caption log-likelihood on LLaVA-558K) or A_embed
(embedding similarity against reference models, on LLaVA-558K or per benchmark) of a stage-1
checkpoint, each row recorded in the scores CSV unless it is already there for its configuration.

The checkpoint and its references are loaded once, only when some row is not stored yet.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from lmms_ac.scores.store import RecordedScores, ScoreValue, check_store, record_score, row_summary


@dataclass(frozen=True)
class ScoreASettings:
    """What to score and where to record it (the options of ``score-a``)."""

    pretrained: str  # stage-1 checkpoint
    out: str
    model_base: Optional[str] = None  # base LLM of a checkpoint holding only mm_projector.bin
    vision_tower: Optional[str] = None
    captions: Optional[str] = None  # LLaVA-558K json
    images: Optional[str] = None  # the folder its image paths are relative to
    method: str = "caption_ll"
    references: Tuple[str, ...] = ()  # reference stage-1 checkpoints for method embed
    benchmarks: Tuple[str, ...] = ()  # A_embed on these lmms-eval tasks' images (method embed)
    include_path: Optional[Tuple[str, ...]] = None  # extra lmms-eval task folders for the benchmarks
    score_separator: bool = False  # caption_ll: also score the plain template's '\n' separator
    n: int = 100
    seed: int = 0
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "auto"
    variant: Optional[str] = None  # row name; default: the checkpoint's directory name
    force: bool = False


def record_a_scores(settings: ScoreASettings, on_line: Callable[[str], None] = lambda line: None) -> RecordedScores:
    """Compute (or find) A / A_embed rows and record them; ``on_line`` gets each row's line as it is settled."""
    s = settings
    benchmarks = list(s.benchmarks)
    if s.method == "embed" and not s.references:
        raise ValueError("--method embed needs --reference CHECKPOINT (e.g. the CLIP@224 and CLIP@336 stage-1 models)")
    if benchmarks and s.method != "embed":
        raise ValueError(
            "--benchmark applies to --method embed (A_embed per benchmark); the caption_ll A score is "
            "defined on LLaVA-558K (--captions/--images)"
        )
    if not benchmarks and (not s.captions or not s.images):
        raise ValueError(
            "score-a needs --captions (the LLaVA-558K json) and --images (its image folder)"
            + ("; or --benchmark TASK for A_embed on a benchmark's images" if s.method == "embed" else "")
        )
    check_store(s.out)
    if not benchmarks:  # a damaged caption file fails now, not after the model has loaded
        from lmms_ac.scores.alignment import read_llava_pretrain

        read_llava_pretrain(s.captions, s.images)
    variant = s.variant or os.path.basename(os.path.normpath(s.pretrained))
    vision = s.vision_tower or ""
    base_config: Dict[str, Any] = {
        "pretrained": os.path.abspath(s.pretrained) if os.path.exists(s.pretrained) else s.pretrained,
        "model_base": s.model_base,
        "n": s.n,
        "seed": s.seed,
        "method": s.method,
        "references": list(s.references),
        "dtype": s.dtype,
        # v2: original-format ids chunked as tokenizer_image_token, PIL pixels; rows of v1 are recomputed
        "definition": 2,
    }
    if s.score_separator:  # only when set, so the hash of default rows stays what it was
        if s.method != "caption_ll":
            raise ValueError("--score-separator applies to --method caption_ll only")
        base_config["scored_tokens"] = "caption+separator"
    models: Dict[str, Any] = {}

    def vlm_and_refs() -> Tuple[Any, List[Any]]:  # loaded once, only when some row is not stored yet
        if "vlm" not in models:
            from lmms_ac.vlm.loaders import load_vlm

            models["vlm"] = load_vlm(
                s.pretrained, model_base=s.model_base, vision_tower=s.vision_tower, dtype=s.dtype, device=s.device
            )
            models["refs"] = [
                load_vlm(r, model_base=s.model_base, dtype=s.dtype, device=s.device) for r in s.references
            ]
        return models["vlm"], models["refs"]

    jobs: List[Tuple[str, Dict[str, Any], Callable[[], ScoreValue]]] = []
    if benchmarks:
        from lmms_ac.scores.alignment import a_embed_name

        include_path = list(s.include_path) if s.include_path is not None else None
        for bench in dict.fromkeys(benchmarks):

            def compute_bench(bench: str = bench) -> ScoreValue:
                from lmms_ac.scores.alignment import embedding_alignment
                from lmms_ac.scores.benchmark_images import benchmark_images

                images = benchmark_images(bench, s.n, s.seed, include_path)
                vlm, refs = vlm_and_refs()
                return ScoreValue(
                    embedding_alignment(vlm, refs, images, s.batch_size),
                    len(images),
                    {"images": f"{bench} (lmms-eval task docs, seeded)"},
                )

            jobs.append((a_embed_name(bench), {**base_config, "benchmark": bench}, compute_bench))
    else:
        config = {**base_config, "captions": os.path.basename(s.captions)}

        def compute() -> ScoreValue:
            from lmms_ac.scores.alignment import embedding_alignment, read_llava_pretrain, sample_pairs, score_a

            vlm, refs = vlm_and_refs()
            if s.method == "caption_ll":
                res = score_a(
                    vlm,
                    s.captions,
                    s.images,
                    n=s.n,
                    seed=s.seed,
                    batch_size=s.batch_size,
                    score_separator=s.score_separator,
                )
                return ScoreValue(res["value"], res["n"], {"per_pair": res["per_pair"]})
            from lmms_ac.scores.alignment import open_image

            pairs = sample_pairs(read_llava_pretrain(s.captions, s.images), s.n, s.seed)
            value = embedding_alignment(vlm, refs, [open_image(p.image_path) for p in pairs], s.batch_size)
            return ScoreValue(value, len(pairs), {"images": "LLaVA-558K"})

        jobs.append(("A" if s.method == "caption_ll" else "A_embed", config, compute))

    run = RecordedScores(out=s.out, variant=variant, vision=vision)
    for score_name, job_config, compute_fn in jobs:
        row = record_score(
            s.out,
            variant=variant,
            vision=vision,
            score=score_name,
            config=job_config,
            compute=compute_fn,
            method=s.method,
            force=s.force,
        )
        run.rows.append(row)
        on_line(row_summary(row, s.out))
    return run
