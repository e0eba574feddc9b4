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

DEFAULT_OUT = "scores.csv"


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="CKPT",
                   help="trained checkpoint, any format lmms_ac_llava loads (llava-hf or original LLaVA; directory or hub id)")
    p.add_argument("--model-base", default=None, help="base LLM of a stage-1 checkpoint (only mm_projector.bin)")
    p.add_argument("--vision-tower", default=None, help="override the checkpoint's vision tower spec")
    p.add_argument("--variant", default=None, help="row name in the scores file (default: the checkpoint's directory name)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--dtype", default="auto", help="auto | float16 | bfloat16 | float32")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"scores CSV to append to (default: {DEFAULT_OUT})")
    p.add_argument("--force", action="store_true", help="recompute and replace rows already in --out for this config")
    p.add_argument("--json", action="store_true", help="print the full report as JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "layers", help="what the MLLM keeps of its encoder, layer by layer: C@L, reconstruction, attention balance",
        description="Run SPair-layout images through a trained MLLM once each (hooks read every layer) and report, "
                    "per layer L (0 = projector output): the C score on the visual-token hidden states next to the "
                    "encoder's own C (C@L, C@enc), the cosine of a least-squares map back to the encoder features "
                    "fitted on half the images and measured on the other half (recon@L), and the share of "
                    "attention text positions put on image positions (attn_img@L, eager attention).")
    _add_model(p)
    p.add_argument("--spair", required=True, metavar="DIR", help="SPair-71k layout root (JPEGImages/, PairAnnotation/)")
    p.add_argument("--split", default="test", help="trn | val | test (default: test)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N pairs (by file name)")
    p.add_argument("--layers", default="all", help="layers to read: 'all' (default), '0,8,16,-1', '0-12' (0 = projector output)")
    p.add_argument("--method", default="argmax", choices=["argmax", "window_softargmax"])
    p.add_argument("--alpha", type=float, default=0.1, help="PCK threshold as a fraction of max(h, w) of the target bbox")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--pad", default="zero", choices=["zero", "mean"],
                   help="letterbox padding: zero (as score-c, default) or the encoder's mean colour (as LLaVA's expand2square)")
    p.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="user prompt (repeatable; images cycle through them). Default: a neutral set ('Describe the image.', ...)")
    p.add_argument("--prompts-file", default=None, metavar="FILE",
                   help="prompts, one per line (.txt) or records with a 'question'/'prompt'/'text' field (.jsonl), "
                        "e.g. a task's questions for its attention balance")
    p.add_argument("--prompt-format", default="auto", help="auto | vicuna_v1 | chat_template | plain")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--no-c", action="store_true", help="skip C@L")
    p.add_argument("--no-recon", action="store_true", help="skip reconstruction")
    p.add_argument("--no-attention", action="store_true", help="skip attention balance (then no eager attention is needed)")
    p.add_argument("--recon-tokens", type=int, default=64, help="held-out tokens sampled per test image (default 64)")
    p.add_argument("--recon-ridge", type=float, default=1e-3, help="ridge, relative to the mean feature variance (default 1e-3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test image split and token sample")
    p.add_argument("--plot", default=None, metavar="DIR", help="write the curves against depth to DIR/layers_<variant>.{png,svg}")
    p.add_argument("--overwrite", action="store_true", help="replace existing figures")
    p.set_defaults(func=cmd_layers)


def read_prompts(texts: Optional[Sequence[str]], path: Optional[str]) -> List[str]:
    """Prompts from ``--prompt`` and ``--prompts-file``; the neutral set when neither is given."""
    import json

    from lmms_ac.layers.extraction import NEUTRAL_PROMPTS

    prompts = list(texts or [])
    if path:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"--prompts-file {path} does not exist")
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            if file.suffix in (".jsonl", ".json"):
                rec = json.loads(line)
                value = next((rec[k] for k in ("question", "prompt", "text") if isinstance(rec, dict) and k in rec), None)
                if not isinstance(value, str):
                    raise ValueError(f"{path}:{n}: a record needs a string 'question', 'prompt' or 'text' field")
                prompts.append(value.replace("<image>", "").strip())
            else:
                prompts.append(line.strip())
    return prompts or list(NEUTRAL_PROMPTS)


def default_variant(model: str) -> str:
    return str(model).rstrip("/").split("/")[-1]


def load_model(args: argparse.Namespace):
    import torch

    from lmms_ac.vlm.loaders import load_vlm

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_vlm(args.model, model_base=args.model_base, vision_tower=args.vision_tower, dtype=args.dtype, device=device)


def record_rows(out: str, variant: str, vision: str, rows, config: Dict[str, Any], split: str, method: str,
                force: bool, details: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Append (score, value, n) rows through ``record_score`` (existing rows of the same config are kept unless ``force``)."""
    from lmms_ac.scores.store import ScoreValue, record_score

    recorded = []
    for score, value, n in rows:
        row = record_score(out, variant=variant, vision=vision, score=score, config=config,
                           compute=lambda v=value, n=n: ScoreValue(value=v, n=n, details=details),
                           method=method, split=split, force=force)
        recorded.append(row)
    return recorded


def cmd_layers(args: argparse.Namespace) -> int:
    import json

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
    prompts = read_prompts(args.prompt, args.prompts_file)
    variant = args.variant or default_variant(args.model)
    config = {"command": "layers", "model": args.model, "model_base": args.model_base, "vision_tower": args.vision_tower,
              "dataset": "spair", "data_fingerprint": dataset_fingerprint(args.spair, split, args.limit), "split": split,
              "limit": args.limit, "method": args.method, "alpha": args.alpha, "pad": args.pad, "prompts": prompts,
              "prompt_format": args.prompt_format, "system_prompt": args.system_prompt, "dtype": args.dtype,
              "recon_tokens": args.recon_tokens, "recon_ridge": args.recon_ridge, "seed": args.seed}
    vlm = load_model(args)
    from lmms_ac.layers.extraction import decoder_blocks, parse_layers
    from lmms_ac.layers.pipeline import run_layers

    layers = parse_layers(args.layers, len(decoder_blocks(vlm.llm)))
    report = run_layers(vlm, args.spair, split, layers=layers, limit=args.limit, method=args.method, alpha=args.alpha,
                        batch_size=args.batch_size, prompts=prompts, prompt_format=args.prompt_format,
                        system_prompt=args.system_prompt, pad=args.pad, correspondence=not args.no_c,
                        reconstruction=not args.no_recon, attention=not args.no_attention,
                        recon_tokens=args.recon_tokens, recon_ridge=args.recon_ridge, seed=args.seed,
                        progress=not args.no_progress)
    report.config = config
    vision = str(getattr(vlm.vision, "spec", type(vlm.vision).__name__))
    details = {"n_layers": report.n_layers, "n_images": report.n_images, "n_keypoints": report.n_keypoints,
               "c_chance": report.c_chance, "attn_uniform": report.attn_uniform, "recon_split": report.recon_split}
    rows = record_rows(args.out, variant, vision, report.scores(), config, split, args.method, args.force, details)
    figures = []
    if args.plot:
        from lmms_ac.layers.plots import plot_layer_curves

        figures = plot_layer_curves(report, Path(args.plot) / f"layers_{variant.replace('/', '_')}",
                                    title=f"{variant}: visual tokens inside the MLLM", overwrite=args.overwrite)
    if args.json:
        from lmms_ac.results.output import json_document

        doc = {"variant": variant, "vision": vision, **report.to_dict(), "scores_file": args.out,
               "figures": [str(f) for f in figures],
               "skipped": [r["score"] for r in rows if r.get("skipped")]}
        print(json_document(json.loads(json.dumps(doc, default=str)), config))
        return 0
    print(format_report(report, variant))
    skipped = [r["score"] for r in rows if r.get("skipped")]
    print(f"\n{len(rows) - len(skipped)} score rows appended to {args.out}" +
          (f"; {len(skipped)} already there for this config (kept; --force replaces)" if skipped else ""))
    for f in figures:
        print(f"figure: {f}")
    return 0


def format_report(report, variant: str) -> str:
    """A per-layer table with the references on top."""
    lines = [f"{variant}: {report.n_images} images, {report.n_pairs} pairs, {report.n_layers} LLM blocks, "
             f"{report.forwards} forwards, {report.seconds:.1f}s"]
    if report.c:
        lines.append(f"  encoder C = {report.c_encoder:.2f}%   chance = {report.c_chance:.2f}%")
    if report.attn_img:
        lines.append(f"  uniform-attention image share = {report.attn_uniform:.4f}")
    head = ["layer"] + [h for h, d in (("C@L", report.c), ("recon@L", report.recon), ("attn_img@L", report.attn_img)) if d]
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
