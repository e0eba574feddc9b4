"""``lmms-ac layers`` (C@L, reconstruction, attention balance), ``lmms-ac layers-knn`` (mutual k-NN
alignment), ``lmms-ac zeroshot-tasks`` (classification tasks for lmms-eval) and ``lmms-ac
zeroshot-encoder`` (CLIP-style zero-shot of an encoder with a text tower).

Scores go to the shared scores CSV (``--out``) through ``lmms_ac.scores.store``, one row per score
name (``C@L12``, ``C@enc``, ``recon@L12``, ``attn_img@L12``, ``knn@L12``, ``knn_base@L12``,
``zeroshot_enc:<dataset>``): a rerun with the same configuration is skipped, ``--force`` recomputes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from lmms_ac.cli.args import positive_int
from lmms_ac.scores.methods import CORRESPONDENCE_METHODS

DEFAULT_OUT = "scores.csv"


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        metavar="CKPT",
        help="trained checkpoint, any format lmms_ac_llava loads (llava-hf or original LLaVA; directory or hub id)",
    )
    p.add_argument("--model-base", default=None, help="base LLM of a stage-1 checkpoint (only mm_projector.bin)")
    p.add_argument("--vision-tower", default=None, help="override the checkpoint's vision tower spec")
    p.add_argument(
        "--variant", default=None, help="row name in the scores file (default: the checkpoint's directory name)"
    )
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--dtype", default="auto", help="auto | float16 | bfloat16 | float32")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"scores CSV to append to (default: {DEFAULT_OUT})")
    p.add_argument("--force", action="store_true", help="recompute and replace rows already in --out for this config")
    p.add_argument("--json", action="store_true", help="print the full report as JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "layers",
        help="what the MLLM keeps of its encoder, layer by layer: C@L, reconstruction, attention balance",
        description="Run SPair-layout images through a trained MLLM once each (hooks read every layer) and report, "
        "per layer L (0 = projector output): the C score on the visual-token hidden states next to the "
        "encoder's own C (C@L, C@enc), the cosine of a least-squares map back to the encoder features "
        "fitted on half the images and measured on the other half (recon@L), and the share of "
        "attention text positions put on image positions (attn_img@L, eager attention).",
    )
    _add_model(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--spair", metavar="DIR", help="SPair-71k layout root (JPEGImages/, PairAnnotation/): all three metrics"
    )
    src.add_argument(
        "--images", metavar="DIR", help="any image folder (recursive): reconstruction and attention only (no C)"
    )
    p.add_argument("--split", default="test", help="trn | val | test (default: test)")
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="use only the first N pairs (by file name), or N images with --images",
    )
    p.add_argument(
        "--layers", default="all", help="layers to read: 'all' (default), '0,8,16,-1', '0-12' (0 = projector output)"
    )
    p.add_argument("--method", default="argmax", choices=CORRESPONDENCE_METHODS.names())
    p.add_argument(
        "--alpha", type=float, default=0.1, help="PCK threshold as a fraction of max(h, w) of the target bbox"
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per forward pass (default 8)")
    p.add_argument(
        "--pad",
        default="zero",
        choices=["zero", "mean"],
        help="letterbox padding: zero (as score-c, default) or the encoder's mean colour (as LLaVA's expand2square)",
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=None,
        metavar="TEXT",
        help="user prompt (repeatable; images cycle through them). Default: a neutral set ('Describe the image.', ...)",
    )
    p.add_argument(
        "--prompts-file",
        default=None,
        metavar="FILE",
        help="prompts, one per line (.txt) or records with a 'question'/'prompt'/'text' field (.jsonl), "
        "e.g. a task's questions for its attention balance",
    )
    p.add_argument(
        "--task",
        default=None,
        metavar="NAME",
        help="use the questions of this lmms-eval task as prompts (its doc_to_text; images stay the SPair ones)",
    )
    p.add_argument("--task-limit", type=positive_int, default=200, help="questions taken from --task (default 200)")
    p.add_argument(
        "--bank",
        default="model",
        choices=["model", "cpu"],
        help="where one category's per-layer features wait for matching: the model's device (default) or cpu "
        "(per image: (layers + 1) x tokens x hidden values, ~155 MB in fp16 for a 7B LLaVA-1.5)",
    )
    p.add_argument("--prompt-format", default="auto", help="auto | vicuna_v1 | chat_template | plain")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--no-c", action="store_true", help="skip C@L")
    p.add_argument("--no-recon", action="store_true", help="skip reconstruction")
    p.add_argument(
        "--no-attention", action="store_true", help="skip attention balance (then no eager attention is needed)"
    )
    p.add_argument(
        "--recon-tokens", type=positive_int, default=64, help="held-out tokens sampled per test image (default 64)"
    )
    p.add_argument(
        "--recon-ridge", type=float, default=1e-3, help="ridge, relative to each channel's variance (default 1e-3)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test image split and token sample")
    p.add_argument(
        "--plot", default=None, metavar="DIR", help="write the curves against depth to DIR/layers_<variant>.{png,svg}"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing figures")
    p.set_defaults(func=cmd_layers)

    k = subparsers.add_parser(
        "layers-knn",
        help="mutual k-NN alignment of encoder image features and LLM caption features, base LLM vs the MLLM's LLM",
        description="On image-caption pairs (DOCCI or LLaVA-558K layout), the mutual k-nearest-neighbour overlap "
        "between the "
        "checkpoint's vision encoder features of the images (mean over patch tokens) and a language model's "
        "features of the captions (mean over caption tokens) at every LLM layer: the trained MLLM's LLM "
        "(knn@L<l>) and, with --base-llm, the base LLM it started from (knn_base@L<l>).",
    )
    _add_model(k)
    k.add_argument("--data", required=True, choices=["docci", "llava558k"], help="caption data layout")
    k.add_argument(
        "--captions",
        required=True,
        metavar="PATH",
        help="DOCCI root or docci_descriptions.jsonlines; or the LLaVA-558K json",
    )
    k.add_argument("--images", default=None, metavar="DIR", help="image folder (DOCCI default: <root>/images)")
    k.add_argument("--data-split", default=None, help="DOCCI split to keep (train, test, qual_dev...; default all)")
    k.add_argument(
        "--base-llm", default=None, metavar="NAME", help="base LLM (hub id or directory), e.g. lmsys/vicuna-7b-v1.5"
    )
    k.add_argument("--n", type=positive_int, default=1000, help="pairs, drawn with --seed (default 1000)")
    k.add_argument("--k", type=positive_int, default=10, help="neighbours (default 10)")
    k.add_argument("--layers", default="all", help="LLM layers: 'all' (default), '0,8,-1', '4-12'")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--batch-size", type=positive_int, default=16)
    k.add_argument(
        "--max-tokens", type=positive_int, default=512, help="truncate captions to this many tokens (default 512)"
    )
    k.add_argument("--plot", default=None, metavar="DIR", help="write the curves to DIR/knn_<variant>.{png,svg}")
    k.add_argument("--overwrite", action="store_true", help="replace existing figures")
    k.set_defaults(func=cmd_knn)

    z = subparsers.add_parser(
        "zeroshot-tasks",
        help="generate lmms-eval zero-shot classification tasks (loglikelihood over class names)",
        description="For each classification set (a paper set name, or NAME=SOURCE[@split] with SOURCE an image folder "
        "with one sub-folder per class, a datasets save_to_disk copy or a hub dataset id), save a seeded "
        "subset to DIR/NAME and write DIR/zeroshot_NAME.yaml: the MLLM answers by the loglikelihood of "
        "each class name after the question; acc = the most likely class. Run them with "
        "lmms-eval --include_path DIR --tasks zeroshot_NAME (or the tag lmms_ac_zeroshot).",
    )
    z.add_argument(
        "datasets",
        nargs="+",
        metavar="DATASET",
        help="caltech101 | cifar100 | food101 | pets | country211=DIR | eurosat | aircraft | NAME=SOURCE[@split]; "
        "SOURCE is an existing folder, else a hub id ('name' or 'org/name'); any other missing path is an error",
    )
    z.add_argument("--to", required=True, metavar="DIR", help="folder for the task YAMLs and the saved subsets")
    z.add_argument(
        "--n", type=positive_int, default=1000, help="images per set, drawn with --seed (default 1000, as the paper)"
    )
    z.add_argument("--seed", type=int, default=0)
    z.add_argument(
        "--prompt", default=None, help="the question before the class name (default: a neutral 'what is it' question)"
    )
    z.add_argument("--image-column", default=None, help="image column (default: the one Image feature)")
    z.add_argument("--label-column", default=None, help="label column (default: the one ClassLabel feature)")
    z.add_argument("--overwrite", action="store_true", help="regenerate tasks that already exist in DIR")
    z.set_defaults(func=cmd_zeroshot_tasks)

    e = subparsers.add_parser(
        "zeroshot-encoder",
        help="CLIP-style zero-shot accuracy of an encoder with a text tower "
        "(the encoder side of zero-shot recognition)",
        description="Top-1 accuracy of image embedding vs the text embeddings of each class name in prompt templates "
        "(CLIP, SigLIP: any transformers model with get_image_features/get_text_features), on the same "
        "seeded subsets as zeroshot-tasks (give the prepared DIR/NAME folders, or the same sources with "
        "the same --n/--seed). One row zeroshot_enc:NAME per set in --out.",
    )
    e.add_argument(
        "datasets", nargs="+", metavar="DATASET", help="as for zeroshot-tasks, e.g. cifar100=out/zs/cifar100"
    )
    who = e.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--encoder",
        help="dual-encoder directory or hub id (a representation spec such as "
        "clip:openai/clip-vit-large-patch14-336 is accepted). An existing path is used as such; otherwise only "
        "'name' or 'org/name' is a hub id, and anything else (./x, ~/x, a/b/c) is a missing path: an error",
    )
    who.add_argument(
        "--model",
        metavar="CKPT",
        help="an original-format LLaVA checkpoint: its own tower (mm_vision_tower), "
        "scored under the checkpoint's variant name, next to its lmms-eval results",
    )
    e.add_argument(
        "--template",
        action="append",
        default=None,
        help="prompt template with {} (repeatable; default 'a photo of a {}.')",
    )
    e.add_argument("--n", type=positive_int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--image-column", default=None)
    e.add_argument("--label-column", default=None)
    e.add_argument("--batch-size", type=positive_int, default=32)
    e.add_argument("--device", default=None)
    e.add_argument("--variant", default=None, help="row name (default: the encoder name)")
    e.add_argument("--out", default=DEFAULT_OUT)
    e.add_argument("--force", action="store_true")
    e.add_argument("--json", action="store_true")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_zeroshot_encoder)

    t = subparsers.add_parser(
        "zeroshot-table",
        help="zero-shot recognition kept or lost: MLLM accuracy next to its encoder's, per set and on average",
        description="Read the zeroshot_<set> accuracies from lmms-eval result files under RESULTS and the "
        "zeroshot_enc:<set> "
        "rows of --scores, and print one column per MLLM and per encoder (percent), with the average over the "
        "sets every column has (the paper: LLaVA-1.5 38.2%% vs 67.4%% for its CLIP ViT-L/336 over seven sets).",
    )
    t.add_argument("results", metavar="RESULTS", help="lmms-eval --output_path folder(s) parent")
    t.add_argument("--scores", default=None, help="scores CSV holding zeroshot_enc:* rows")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_zeroshot_table)


def default_variant(model: str) -> str:
    return str(model).rstrip("/").split("/")[-1]


def load_model(args: argparse.Namespace):
    import torch

    from lmms_ac.vlm.loaders import load_vlm

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_vlm(
        args.model, model_base=args.model_base, vision_tower=args.vision_tower, dtype=args.dtype, device=device
    )


def record_rows(
    out: str,
    variant: str,
    vision: str,
    rows,
    config: Dict[str, Any],
    split: str,
    method: str,
    force: bool,
    details: Dict[str, Any],
) -> List[Dict[str, Any]]:
    """Append (score, value, n) rows through ``record_score`` (existing rows of the same config are kept unless
    ``force``)."""
    from lmms_ac.scores.store import ScoreValue, record_score

    recorded = []
    for score, value, n in rows:
        row = record_score(
            out,
            variant=variant,
            vision=vision,
            score=score,
            config=config,
            compute=lambda v=value, n=n: ScoreValue(value=v, n=n, details=details),
            method=method,
            split=split,
            force=force,
        )
        recorded.append(row)
    return recorded


def cmd_layers(args: argparse.Namespace) -> int:
    from lmms_ac.io import config_hash
    from lmms_ac.layers.prompts import read_prompts, task_prompts
    from lmms_ac.scores.spair import dataset_fingerprint, normalize_split

    if args.alpha <= 0:
        raise ValueError(f"--alpha must be > 0, got {args.alpha}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.no_c and args.no_recon and args.no_attention:
        raise ValueError("--no-c, --no-recon and --no-attention together leave nothing to compute")
    split = normalize_split(args.split)
    if args.task_limit < 1:
        raise ValueError(f"--task-limit must be >= 1, got {args.task_limit}")
    prompts = read_prompts(args.prompt, args.prompts_file) if not args.task else []
    if args.task:
        if args.prompt or args.prompts_file:
            raise ValueError("--task gives the prompts; do not combine it with --prompt/--prompts-file")
        prompts = task_prompts(args.task, args.task_limit)
    variant = args.variant or default_variant(args.model)
    images = None
    if args.images:
        from lmms_ac.io import config_hash as _hash
        from lmms_ac.layers.pipeline import list_images

        images = list_images(args.images, args.limit)
        if args.no_recon and args.no_attention:
            raise ValueError("--images gives no C score; with --no-recon and --no-attention nothing is left to compute")
        data = {"dataset": "images", "data_fingerprint": _hash([str(p) for p in images]), "split": ""}
    else:
        data = {
            "dataset": "spair",
            "data_fingerprint": dataset_fingerprint(args.spair, split, args.limit),
            "split": split,
        }
    config = {
        "command": "layers",
        "model": args.model,
        "model_base": args.model_base,
        "vision_tower": args.vision_tower,
        **data,
        "limit": args.limit,
        "method": args.method,
        "alpha": args.alpha,
        "pad": args.pad,
        "task": args.task,
        "prompts": prompts if len(prompts) <= 8 else {"n": len(prompts), "sha": config_hash(prompts)},
        "prompt_format": args.prompt_format,
        "system_prompt": args.system_prompt,
        "dtype": args.dtype,
        "recon_tokens": args.recon_tokens,
        "recon_ridge": args.recon_ridge,
        "seed": args.seed,
    }
    stem = Path(args.plot) / f"layers_{variant.replace('/', '_')}" if args.plot else None
    _check_figure(stem, args.overwrite)
    from lmms_ac.layers.extraction import decoder_blocks, parse_layers
    from lmms_ac.layers.pipeline import LayerReport, expected_scores, run_layers

    label, n_blocks = checkpoint_summary(args.model, args.vision_tower)
    switches = dict(
        correspondence=not args.no_c and images is None,
        reconstruction=not args.no_recon,
        attention=not args.no_attention,
    )
    if label and n_blocks and not args.force:  # everything already recorded: answer from the store, load nothing
        layers = parse_layers(args.layers, n_blocks)
        stored = stored_rows(args.out, variant, label, expected_scores(layers, **switches), config)
        if stored is not None:
            report = LayerReport.from_rows(n_blocks, layers, stored)
            report.config = config
            return _emit_layers(args, report, variant, label, stem, [dict(r, skipped=True) for r in stored.values()])
    vlm = load_model(args)
    layers = parse_layers(args.layers, len(decoder_blocks(vlm.llm)))
    report = run_layers(
        vlm,
        args.spair,
        split,
        layers=layers,
        limit=args.limit,
        images=images,
        method=args.method,
        alpha=args.alpha,
        batch_size=args.batch_size,
        prompts=prompts,
        prompt_format=args.prompt_format,
        system_prompt=args.system_prompt,
        pad=args.pad,
        correspondence=not args.no_c,
        reconstruction=switches["reconstruction"],
        attention=switches["attention"],
        recon_tokens=args.recon_tokens,
        recon_ridge=args.recon_ridge,
        seed=args.seed,
        progress=not args.no_progress,
        bank_device="cpu" if args.bank == "cpu" else None,
    )
    report.config = config
    vision = label or str(getattr(vlm.vision, "spec", type(vlm.vision).__name__))
    details = {
        "n_layers": report.n_layers,
        "n_images": report.n_images,
        "n_pairs": report.n_pairs,
        "n_keypoints": report.n_keypoints,
        "c_chance": report.c_chance,
        "attn_uniform": report.attn_uniform,
        "recon_split": report.recon_split,
        "attn_images": report.attn_images,
        "forwards": report.forwards,
    }
    rows = record_rows(
        args.out, variant, vision, report.scores(), config, data["split"], args.method, args.force, details
    )
    return _emit_layers(args, report, variant, vision, stem, rows)


def checkpoint_summary(model: str, vision_tower: Optional[str]):
    """(vision label of the score rows, number of LLM blocks) from the checkpoint's config alone, or
    (None, None) when the config does not say (then the model is loaded to find out)."""
    from lmms_ac.vlm.loaders import checkpoint_format, read_config

    try:
        config = read_config(model)
        fmt = checkpoint_format(config)
    except ValueError:
        return None, None  # load_vlm raises the full explanation
    if fmt == "llava_hf":
        blocks = (config.get("text_config") or {}).get("num_hidden_layers")
        label = vision_tower or f"llava-hf:{model}"
    else:
        blocks = config.get("num_hidden_layers")
        label = vision_tower or config.get("mm_vision_tower") or config.get("vision_tower")
    return (str(label), int(blocks)) if label and blocks else (None, None)


def stored_rows(out: str, variant: str, vision: str, scores: Sequence[str], config: Dict[str, Any]):
    """``{score: row}`` when every score is already in ``out`` for this config, else None."""
    from lmms_ac.io import config_hash
    from lmms_ac.scores.store import find_score

    found = {}
    for score in scores:
        row = find_score(out, variant, score, config_hash({"score": score, "vision": vision, **config}))
        if row is None:
            return None
        found[score] = row
    return found


def _emit_layers(args: argparse.Namespace, report, variant: str, vision: str, stem: Optional[Path], rows) -> int:
    import json

    figures = []
    if stem is not None:
        from lmms_ac.layers.plots import plot_layer_curves

        figures = plot_layer_curves(
            report, stem, title=f"{variant}: visual tokens inside the MLLM", overwrite=args.overwrite
        )
    if args.json:
        from lmms_ac.results.output import json_document

        doc = {
            "variant": variant,
            "vision": vision,
            **report.to_dict(),
            "scores_file": args.out,
            "figures": [str(f) for f in figures],
            "skipped": [r["score"] for r in rows if r.get("skipped")],
        }
        print(json_document(json.loads(json.dumps(doc, default=str)), report.config))
        return 0
    print(format_report(report, variant))
    skipped = [r["score"] for r in rows if r.get("skipped")]
    if len(skipped) == len(rows):
        print(f"\nall {len(rows)} scores were already in {args.out} for this config (shown above; --force recomputes)")
    else:
        print(
            f"\n{len(rows) - len(skipped)} score rows appended to {args.out}"
            + (f"; {len(skipped)} already there for this config (kept; --force replaces)" if skipped else "")
        )
    for f in figures:
        print(f"figure: {f}")
    return 0


def format_report(report, variant: str) -> str:
    """A per-layer table with the references on top."""
    lines = [
        (
            f"{variant}: {report.n_images} images, {report.n_pairs} pairs, {report.n_layers} LLM blocks, "
            f"{report.forwards} forwards, {report.seconds:.1f}s"
        )
    ]
    if report.c:
        lines.append(f"  encoder C = {report.c_encoder:.2f}%   chance = {report.c_chance:.2f}%")
    if report.attn_img:
        lines.append(f"  uniform-attention image share = {report.attn_uniform:.4f}")
    head = ["layer"] + [
        h for h, d in (("C@L", report.c), ("recon@L", report.recon), ("attn_img@L", report.attn_img)) if d
    ]
    lines.append("  " + "\t".join(head))
    for layer in report.layers:
        cells = [str(layer)]
        if report.c:
            cells.append(f"{report.c[layer]:.2f}")
        if report.recon:
            cells.append(f"{report.recon[layer]:.4f}")
        if report.attn_img:
            cells.append(f"{report.attn_img[layer]:.4f}" if layer in report.attn_img else "-")
        lines.append("  " + "\t".join(cells))
    return "\n".join(lines)


def _check_figure(stem: Optional[Path], overwrite: bool) -> None:
    if stem is None or overwrite:
        return
    from lmms_ac.io import OutputExistsError
    from lmms_ac.law.plots import FORMATS

    for fmt in FORMATS:  # refuse before the (long) computation, not after it
        if stem.with_name(f"{stem.name}.{fmt}").exists():
            raise OutputExistsError(f"{stem}.{fmt} already exists; choose another --plot directory or pass --overwrite")


def cmd_knn(args: argparse.Namespace) -> int:
    import json

    from lmms_ac.io import config_hash

    if args.n < 2 or not 1 <= args.k < args.n:
        raise ValueError(f"need --n >= 2 and 1 <= --k < --n, got --n {args.n} --k {args.k}")
    from lmms_ac.layers.knn import read_caption_pairs
    from lmms_ac.scores.alignment import sample_pairs

    pairs = sample_pairs(read_caption_pairs(args.data, args.captions, args.images, args.data_split), args.n, args.seed)
    if len(pairs) <= args.k:
        raise ValueError(f"only {len(pairs)} pairs available; --k {args.k} needs more than k pairs")
    variant = args.variant or default_variant(args.model)
    stem = Path(args.plot) / f"knn_{variant.replace('/', '_')}" if args.plot else None
    _check_figure(stem, args.overwrite)
    config = {
        "command": "layers-knn",
        "model": args.model,
        "model_base": args.model_base,
        "vision_tower": args.vision_tower,
        "data": args.data,
        "pairs": config_hash(sorted(p.id for p in pairs)),
        "n": len(pairs),
        "k": args.k,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "dtype": args.dtype,
    }
    vlm = load_model(args)
    from lmms_ac.layers.extraction import parse_layers
    from lmms_ac.layers.knn import (
        caption_features,
        image_features,
        knn_by_layer,
        load_base_llm,
    )

    progress = not args.no_progress
    layers = parse_layers(args.layers, int(vlm.llm.config.num_hidden_layers))
    u = image_features(vlm.vision, [p.image_path for p in pairs], args.batch_size, progress)
    captions = [p.caption for p in pairs]
    curves = {
        "mllm": knn_by_layer(
            u,
            caption_features(
                vlm.llm,
                vlm.tokenizer,
                captions,
                layers,
                args.batch_size,
                args.max_tokens,
                progress,
                "MLLM caption features",
            ),
            args.k,
        )
    }
    if args.base_llm:
        base, tok = load_base_llm(args.base_llm, vlm.device, args.dtype)
        if int(base.config.num_hidden_layers) != int(vlm.llm.config.num_hidden_layers):
            from loguru import logger

            logger.warning(
                f"base LLM has {base.config.num_hidden_layers} layers, the MLLM's LLM "
                f"{vlm.llm.config.num_hidden_layers}; layers are compared by index"
            )
        base_layers = [x for x in layers if x <= int(base.config.num_hidden_layers)]
        curves["base"] = knn_by_layer(
            u,
            caption_features(
                base, tok, captions, base_layers, args.batch_size, args.max_tokens, progress, "base caption features"
            ),
            args.k,
        )
    chance = args.k / (len(pairs) - 1)
    rows = [(f"knn@L{x}", v, len(pairs)) for x, v in curves["mllm"].items()]
    rows += [(f"knn_base@L{x}", v, len(pairs)) for x, v in curves.get("base", {}).items()]
    vision = str(getattr(vlm.vision, "spec", type(vlm.vision).__name__))
    details = {"k": args.k, "chance": chance, "base_llm": args.base_llm}
    recorded = record_rows(
        args.out,
        variant,
        vision,
        rows,
        {**config, "base_llm": args.base_llm},
        args.data,
        "mutual_knn",
        args.force,
        details,
    )
    figures = []
    if stem is not None:
        from lmms_ac.layers.plots import plot_knn_curves

        labels = {"mllm": f"{variant} (MLLM's LLM)", "base": f"{args.base_llm} (base LLM)"}
        figures = plot_knn_curves(
            {labels[k]: v for k, v in curves.items()},
            stem,
            args.k,
            chance=chance,
            title=f"vision encoder vs caption features, {len(pairs)} pairs",
            overwrite=args.overwrite,
        )
    if args.json:
        from lmms_ac.results.output import json_document

        doc = {
            "variant": variant,
            "vision": vision,
            "k": args.k,
            "n": len(pairs),
            "chance": chance,
            "mllm": {str(x): v for x, v in curves["mllm"].items()},
            "base": {str(x): v for x, v in curves.get("base", {}).items()} or None,
            "scores_file": args.out,
            "figures": [str(f) for f in figures],
        }
        print(json_document(json.loads(json.dumps(doc, default=str)), config))
        return 0
    print(f"{variant}: mutual {args.k}-NN alignment over {len(pairs)} pairs (independent spaces: {chance:.4f})")
    print("  layer\tMLLM's LLM" + ("\tbase LLM" if "base" in curves else ""))
    for x in layers:
        base_cell = f"\t{curves['base'][x]:.4f}" if x in curves.get("base", {}) else ("\t-" if "base" in curves else "")
        print(f"  {x}\t{curves['mllm'][x]:.4f}{base_cell}")
    skipped = sum(1 for r in recorded if r.get("skipped"))
    print(
        f"{len(recorded) - skipped} score rows appended to {args.out}"
        + (f"; {skipped} already there" if skipped else "")
    )
    for f in figures:
        print(f"figure: {f}")
    return 0


def cmd_zeroshot_tasks(args: argparse.Namespace) -> int:
    from lmms_ac.layers.zeroshot import DEFAULT_PROMPT, parse_source, prepare_task

    specs = [parse_source(d) for d in args.datasets]  # every name is checked before any work
    names = [n for n, _, _ in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names repeat: {names}")
    done = []
    for name, source, split in specs:
        info = prepare_task(
            name,
            source,
            args.to,
            split=split,
            n=args.n,
            seed=args.seed,
            image_column=args.image_column,
            label_column=args.label_column,
            prompt=args.prompt or DEFAULT_PROMPT,
            overwrite=args.overwrite,
        )
        print(f"{info['task']}: {info['n']} images, {info['classes']} classes from {source} -> {info['yaml']}")
        done.append(info["task"])
    print(
        f"\nrun: lmms-eval --model lmms_ac_llava --model_args pretrained=<ckpt> --include_path {args.to} "
        f"--tasks {','.join(done)} --output_path <results>"
    )
    return 0


def cmd_zeroshot_encoder(args: argparse.Namespace) -> int:
    import json

    import torch

    from lmms_ac.layers.zeroshot import (
        DEFAULT_TEMPLATES,
        class_prompt_name,
        encoder_model_id,
        encoder_zero_shot,
        find_columns,
        load_source,
        load_text_image_model,
        parse_source,
        subsample,
    )
    from lmms_ac.scores.store import ScoreValue, record_score

    specs = [parse_source(d) for d in args.datasets]
    templates = args.template or list(DEFAULT_TEMPLATES)
    if args.model:
        tower, _ = checkpoint_summary(args.model, None)
        if not tower or tower.startswith("llava-hf:"):
            raise ValueError(
                f"{args.model} does not name its vision tower by hub id (llava-hf checkpoints embed it); pass "
                "--encoder with the tower's dual-encoder id, e.g. openai/clip-vit-large-patch14-336"
            )
        args.encoder = tower
    encoder_model_id(args.encoder)  # a missing encoder path fails here, before any data loads
    variant = args.variant or (default_variant(args.model) if args.model else args.encoder)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cache: Dict[str, Any] = {}
    results = {}
    for name, source, split in specs:
        data = load_source(source, split)
        image_col, label_col = find_columns(data.features, args.image_column, args.label_column)
        idx = subsample(len(data), args.n, args.seed)
        classes = [class_prompt_name(c) for c in data.features[label_col].names]
        config = {
            "command": "zeroshot-encoder",
            "dataset": name,
            "source": source,
            "split": split,
            "n": args.n,
            "seed": args.seed,
            "templates": templates,
            "classes": classes,
        }

        def compute(data=data, idx=idx, classes=classes, image_col=image_col, label_col=label_col) -> Any:
            if "model" not in cache:
                cache["model"] = load_text_image_model(args.encoder, device)
            sub = data.select(idx)
            res = encoder_zero_shot(
                *cache["model"],
                sub[image_col],
                sub[label_col],
                classes,
                templates,
                args.batch_size,
                not args.no_progress,
            )
            return ScoreValue(value=res["accuracy"], n=res["n"], details={"classes": len(classes)})

        row = record_score(
            args.out,
            variant=variant,
            vision=args.encoder,
            score=f"zeroshot_enc:{name}",
            config=config,
            compute=compute,
            method="clip_zero_shot",
            split=split or "",
            force=args.force,
        )
        results[name] = {"accuracy": float(row["value"]), "n": int(row["n"]), "skipped": bool(row.get("skipped"))}
    if args.json:
        print(
            json.dumps(
                {"variant": variant, "encoder": args.encoder, "templates": templates, "results": results}, indent=2
            )
        )
        return 0
    for name, r in results.items():
        state = "already recorded" if r["skipped"] else "recorded"
        print(f"{variant}\tzeroshot_enc:{name}\t{r['accuracy']:.2f}%\t(n={r['n']}, {state} in {args.out})")
    return 0


def cmd_zeroshot_table(args: argparse.Namespace) -> int:
    import json

    from lmms_ac.layers.zeroshot_table import format_table, zeroshot_table

    table = zeroshot_table(args.results, args.scores)
    print(json.dumps(table, indent=2) if args.json else format_table(table))
    return 0
