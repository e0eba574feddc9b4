"""``lmms-ac score-a``: the A score of a stage-1 model, one row appended to a scores CSV."""
from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score-a", help="A score (cross-modal alignment) of a stage-1 model",
                       description="Mean caption-token log-likelihood over N seeded LLaVA-558K pairs with encoder, stage-1 "
                                   "projector and LLM frozen (method caption_ll), or the published embedding-similarity "
                                   "variant against reference models (method embed, score name A_embed).")
    p.add_argument("--pretrained", required=True, help="stage-1 checkpoint (llava-hf or original format; mm_projector.bin needs --model-base)")
    p.add_argument("--model-base", help="base LLM for a checkpoint holding only mm_projector.bin")
    p.add_argument("--vision-tower", help="representation spec overriding the checkpoint's tower")
    p.add_argument("--captions", help="LLaVA-558K json (blip_laion_cc_sbu_558k.json)")
    p.add_argument("--images", help="folder the json's image paths are relative to")
    p.add_argument("--method", choices=["caption_ll", "embed"], default="caption_ll")
    p.add_argument("--reference", action="append", default=[], help="reference stage-1 checkpoint for --method embed (repeatable)")
    p.add_argument("--score-separator", action="store_true",
                   help="caption_ll: also score the '\\n' separator LLaVA's plain template appends after each caption "
                        "(stage-1 training's loss); by default only the caption's tokens are scored, as the paper defines A")
    p.add_argument("--n", type=int, default=100, help="image-caption pairs (default 100, as the paper)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--variant", help="row name (default: the checkpoint's directory name)")
    p.add_argument("--out", default="scores.csv", help="scores CSV (rows are appended; reruns skip what is done)")
    p.add_argument("--force", action="store_true", help="recompute and replace a row already in --out")
    p.set_defaults(func=cmd_score_a)


def cmd_score_a(args: argparse.Namespace) -> int:
    from lmms_ac.scores.store import ScoreValue, record_score

    if not args.captions or not args.images:
        raise ValueError("score-a needs --captions (the LLaVA-558K json) and --images (its image folder)")
    if args.method == "embed" and not args.reference:
        raise ValueError("--method embed needs --reference CHECKPOINT (e.g. the CLIP@224 and CLIP@336 stage-1 models)")
    from lmms_ac.scores.cli import check_store

    check_store(args.out)
    variant = args.variant or os.path.basename(os.path.normpath(args.pretrained))
    vision = args.vision_tower or ""
    config = {"pretrained": os.path.abspath(args.pretrained) if os.path.exists(args.pretrained) else args.pretrained,
              "model_base": args.model_base, "captions": os.path.basename(args.captions), "n": args.n, "seed": args.seed,
              "method": args.method, "references": args.reference, "dtype": args.dtype}
    if args.score_separator:  # only when set, so the hash of default rows stays what it was
        if args.method != "caption_ll":
            raise ValueError("--score-separator applies to --method caption_ll only")
        config["scored_tokens"] = "caption+separator"
    score_name = "A" if args.method == "caption_ll" else "A_embed"

    def compute() -> ScoreValue:
        from lmms_ac.scores.alignment import embedding_alignment, read_llava_pretrain, sample_pairs, score_a
        from lmms_ac.vlm.loaders import load_vlm

        vlm = load_vlm(args.pretrained, model_base=args.model_base, vision_tower=args.vision_tower, dtype=args.dtype, device=args.device)
        if args.method == "caption_ll":
            res = score_a(vlm, args.captions, args.images, n=args.n, seed=args.seed, batch_size=args.batch_size,
                          score_separator=args.score_separator)
            return ScoreValue(res["value"], res["n"], {"per_pair": res["per_pair"]})
        from lmms_ac.scores.alignment import _open

        pairs = sample_pairs(read_llava_pretrain(args.captions, args.images), args.n, args.seed)
        refs = [load_vlm(r, model_base=args.model_base, dtype=args.dtype, device=args.device) for r in args.reference]
        value = embedding_alignment(vlm, refs, [_open(p.image_path) for p in pairs], args.batch_size)
        return ScoreValue(value, len(pairs), {})

    row = record_score(args.out, variant=variant, vision=vision, score=score_name, config=config, compute=compute,
                       method=args.method, force=args.force)
    from lmms_ac.scores.cli import row_summary

    print(row_summary(row, args.out))
    return 0
