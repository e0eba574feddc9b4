"""``lmms-ac score-a``: the A score of a stage-1 model, one row appended to a scores CSV
(arguments in; ``lmms_ac.scores.run_a`` does the work)."""

from __future__ import annotations

import argparse

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
    from lmms_ac.scores.run_a import ScoreASettings, record_a_scores

    settings = ScoreASettings(
        pretrained=args.pretrained,
        out=args.out,
        model_base=args.model_base,
        vision_tower=args.vision_tower,
        captions=args.captions,
        images=args.images,
        method=args.method,
        references=tuple(args.reference),
        benchmarks=tuple(b for arg in args.benchmark for b in arg.split(",") if b.strip()),
        include_path=tuple(args.include_path) if args.include_path is not None else None,
        score_separator=args.score_separator,
        n=args.n,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        variant=args.variant,
        force=args.force,
    )
    record_a_scores(settings, on_line=print)
    return 0
