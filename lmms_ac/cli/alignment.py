"""``lmms-ac score-a``: the A score of a stage-1 model, one row appended to a scores CSV."""

from __future__ import annotations

import argparse
import os

from lmms_ac.cli.args import positive_int
from lmms_ac.scores.methods import ALIGNMENT_METHODS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score-a",
        help="A score (cross-modal alignment) of a stage-1 model",
        description="Mean caption-token log-likelihood over N seeded LLaVA-558K pairs with encoder, stage-1 "
        "projector and LLM frozen (method caption_ll), or the published embedding-similarity "
        "variant against reference models (method embed, score name A_embed).",
    )
    p.add_argument(
        "--pretrained",
        required=True,
        help="stage-1 checkpoint (llava-hf or original format; mm_projector.bin needs --model-base)",
    )
    p.add_argument("--model-base", help="base LLM for a checkpoint holding only mm_projector.bin")
    p.add_argument("--vision-tower", help="representation spec overriding the checkpoint's tower")
    p.add_argument("--captions", help="LLaVA-558K json (blip_laion_cc_sbu_558k.json)")
    p.add_argument("--images", help="folder the json's image paths are relative to")
    p.add_argument(
        "--method",
        choices=list(ALIGNMENT_METHODS.snapshot()),
        default="caption_ll",
        help="; ".join(f"{name}: {what}" for name, what in ALIGNMENT_METHODS.snapshot().items()),
    )
    p.add_argument(
        "--reference", action="append", default=[], help="reference stage-1 checkpoint for --method embed (repeatable)"
    )
    p.add_argument(
        "--benchmark",
        action="append",
        default=[],
        metavar="TASK[,TASK]",
        help="--method embed: compute A_embed on N seeded images of this lmms-eval task's own data (its "
        "doc_to_visual; a local copy under $LMMS_AC_DATASETS works offline), one row "
        "A_embed_<TASK> per benchmark, as published. Without it: the LLaVA-558K images of "
        "--captions/--images, row A_embed",
    )
    p.add_argument("--include-path", action="append", default=None, help="extra lmms-eval task folder for --benchmark")
    p.add_argument(
        "--score-separator",
        action="store_true",
        help="caption_ll: also score the '\\n' separator LLaVA's plain template appends after each caption "
        "(stage-1 training's loss); by default only the caption's tokens are scored, as the paper defines A",
    )
    p.add_argument("--n", type=positive_int, default=100, help="image-caption pairs (default 100, as the paper)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--variant", help="row name (default: the checkpoint's directory name)")
    p.add_argument("--out", default="scores.csv", help="scores CSV (rows are appended; reruns skip what is done)")
    p.add_argument("--force", action="store_true", help="recompute and replace a row already in --out")
    p.set_defaults(func=cmd_score_a)


def cmd_score_a(args: argparse.Namespace) -> int:
    from lmms_ac.scores.store import ScoreValue, record_score

    benchmarks = [b for arg in args.benchmark for b in arg.split(",") if b.strip()]
    if args.method == "embed" and not args.reference:
        raise ValueError("--method embed needs --reference CHECKPOINT (e.g. the CLIP@224 and CLIP@336 stage-1 models)")
    if benchmarks and args.method != "embed":
        raise ValueError(
            "--benchmark applies to --method embed (A_embed per benchmark); the caption_ll A score is "
            "defined on LLaVA-558K (--captions/--images)"
        )
    if not benchmarks and (not args.captions or not args.images):
        raise ValueError(
            "score-a needs --captions (the LLaVA-558K json) and --images (its image folder)"
            + ("; or --benchmark TASK for A_embed on a benchmark's images" if args.method == "embed" else "")
        )
    from lmms_ac.cli.scores import check_store

    check_store(args.out)
    if not benchmarks:  # a damaged caption file fails now, not after the model has loaded
        from lmms_ac.scores.alignment import read_llava_pretrain

        read_llava_pretrain(args.captions, args.images)
    variant = args.variant or os.path.basename(os.path.normpath(args.pretrained))
    vision = args.vision_tower or ""
    base_config = {
        "pretrained": os.path.abspath(args.pretrained) if os.path.exists(args.pretrained) else args.pretrained,
        "model_base": args.model_base,
        "n": args.n,
        "seed": args.seed,
        "method": args.method,
        "references": args.reference,
        "dtype": args.dtype,
        # v2: original-format ids chunked as tokenizer_image_token, PIL pixels; rows of v1 are recomputed
        "definition": 2,
    }
    if args.score_separator:  # only when set, so the hash of default rows stays what it was
        if args.method != "caption_ll":
            raise ValueError("--score-separator applies to --method caption_ll only")
        base_config["scored_tokens"] = "caption+separator"
    models: dict = {}

    def vlm_and_refs():  # loaded once, only when some row is not in --out yet
        if "vlm" not in models:
            from lmms_ac.vlm.loaders import load_vlm

            models["vlm"] = load_vlm(
                args.pretrained,
                model_base=args.model_base,
                vision_tower=args.vision_tower,
                dtype=args.dtype,
                device=args.device,
            )
            models["refs"] = [
                load_vlm(r, model_base=args.model_base, dtype=args.dtype, device=args.device) for r in args.reference
            ]
        return models["vlm"], models["refs"]

    jobs = []
    if benchmarks:
        from lmms_ac.scores.alignment import a_embed_name

        for bench in dict.fromkeys(benchmarks):

            def compute_bench(bench: str = bench) -> ScoreValue:
                from lmms_ac.scores.alignment import embedding_alignment
                from lmms_ac.scores.benchmark_images import benchmark_images

                images = benchmark_images(bench, args.n, args.seed, args.include_path)
                vlm, refs = vlm_and_refs()
                return ScoreValue(
                    embedding_alignment(vlm, refs, images, args.batch_size),
                    len(images),
                    {"images": f"{bench} (lmms-eval task docs, seeded)"},
                )

            jobs.append((a_embed_name(bench), {**base_config, "benchmark": bench}, compute_bench))
    else:
        config = {**base_config, "captions": os.path.basename(args.captions)}

        def compute() -> ScoreValue:
            from lmms_ac.scores.alignment import embedding_alignment, read_llava_pretrain, sample_pairs, score_a

            vlm, refs = vlm_and_refs()
            if args.method == "caption_ll":
                res = score_a(
                    vlm,
                    args.captions,
                    args.images,
                    n=args.n,
                    seed=args.seed,
                    batch_size=args.batch_size,
                    score_separator=args.score_separator,
                )
                return ScoreValue(res["value"], res["n"], {"per_pair": res["per_pair"]})
            from lmms_ac.scores.alignment import open_image

            pairs = sample_pairs(read_llava_pretrain(args.captions, args.images), args.n, args.seed)
            value = embedding_alignment(vlm, refs, [open_image(p.image_path) for p in pairs], args.batch_size)
            return ScoreValue(value, len(pairs), {"images": "LLaVA-558K"})

        jobs.append(("A" if args.method == "caption_ll" else "A_embed", config, compute))

    from lmms_ac.cli.scores import row_summary

    for score_name, config, compute_fn in jobs:
        row = record_score(
            args.out,
            variant=variant,
            vision=vision,
            score=score_name,
            config=config,
            compute=compute_fn,
            method=args.method,
            force=args.force,
        )
        print(row_summary(row, args.out))
    return 0
