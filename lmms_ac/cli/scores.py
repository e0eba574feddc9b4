"""``lmms-ac score-c`` and ``lmms-ac make-ocr-pairs``.

Scores go to one machine-readable CSV (``--out``, default ``scores.csv``), one row per
(variant, score name, config hash), through ``lmms_ac.scores.store.record_score``: a rerun with the
same configuration is skipped (and logged), ``--force`` recomputes and replaces that row. Heavy
imports (torch, the encoders) happen only when a score is actually computed.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from lmms_ac.cli.args import positive_int
from lmms_ac.scores.methods import CORRESPONDENCE_METHODS

DEFAULT_OUT = "scores.csv"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vision",
        action="append",
        required=True,
        metavar="SPEC",
        help="vision representation spec, e.g. clip:openai/clip-vit-large-patch14-336; "
        "repeat to combine several (L2-normalise each, concatenate, re-normalise)",
    )
    p.add_argument("--variant", default=None, help="row name in the scores file (default: the vision spec)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"scores CSV to append to (default: {DEFAULT_OUT})")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--force", action="store_true", help="recompute and replace a row already in --out for this config")


def register(subparsers: Any) -> None:
    """Add ``score-c`` and ``make-ocr-pairs`` to the ``lmms-ac`` command line."""
    p = subparsers.add_parser(
        "score-c",
        help="C score (keypoint correspondence on SPair-71k) and/or C_ocr (synthetic text pairs)",
        description="Correspondence score of a vision representation: PCK@alpha of patch-feature "
        "matching on SPair-71k (--spair DIR, score 'C') and/or on generated text-image "
        "pairs (--ocr, score 'C_ocr'). One row per score is appended to --out.",
    )
    _add_common(p)
    p.add_argument("--spair", default=None, metavar="DIR", help="SPair-71k root (JPEGImages/, PairAnnotation/)")
    p.add_argument("--split", default="test", help="trn | val | test (default: test)")
    p.add_argument("--method", default="argmax", choices=CORRESPONDENCE_METHODS.names())
    p.add_argument(
        "--alpha", type=float, default=0.1, help="PCK threshold as a fraction of max(h, w) of the target bbox"
    )
    p.add_argument("--limit", type=positive_int, default=None, help="score only the first N pairs (by file name)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per encoder call")
    p.add_argument("--ocr", action="store_true", help="also (or only) score C_ocr on generated text-image pairs")
    p.add_argument("--ocr-n", type=positive_int, default=200, help="number of generated OCR pairs (default 200)")
    p.add_argument("--ocr-seed", type=int, default=0, help="seed of the OCR pair generator (default 0)")
    p.set_defaults(func=cmd_score_c)

    m = subparsers.add_parser(
        "make-ocr-pairs",
        help="write seeded synthetic text-image correspondence pairs in the SPair-71k layout",
        description="Render text images (words, numbers, tables, chart labels) and affine-warped copies "
        "with keypoints at word/label centres, in the SPair-71k layout, so score-c reads them.",
    )
    m.add_argument("--to", required=True, metavar="DIR", help="output root (must not hold pairs already)")
    m.add_argument("--n", type=positive_int, default=200, help="number of pairs (default 200)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--split", default="test")
    m.set_defaults(func=cmd_make_ocr_pairs)


def load_vision(specs: List[str], device: Optional[str]) -> Any:
    """One representation, or a list of them (combined by the C score) when several specs are given."""
    import torch

    from lmms_ac.vision import load_representation

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    reps = [load_representation(spec, device=device) for spec in specs]
    # a concat: representation is scored part-wise (L2-normalise each part, concatenate, re-normalise)
    parts = [part for rep in reps for part in (getattr(rep, "parts", None) or [rep])]
    return parts[0] if len(parts) == 1 else parts


def _value_of(result: Any) -> Any:
    from lmms_ac.scores.store import ScoreValue

    details = result.to_dict()
    for key in ("overall", "n_pairs"):
        details.pop(key)
    return ScoreValue(value=result.overall, n=result.n_pairs, details=details)


def cmd_score_c(args: argparse.Namespace) -> int:
    from lmms_ac.scores.store import record_score

    if not args.spair and not args.ocr:
        raise ValueError("nothing to score: give --spair DIR (score C) and/or --ocr (score C_ocr)")
    if args.alpha <= 0:
        raise ValueError(f"--alpha must be > 0, got {args.alpha}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    check_store(args.out)
    vision = "+".join(args.vision)
    variant = args.variant or vision
    cache: Dict[str, Any] = {}

    def rep() -> Any:  # loaded only when some score is not in --out yet
        if "rep" not in cache:
            cache["rep"] = load_vision(args.vision, args.device)
        return cache["rep"]

    jobs: List[tuple] = []
    if args.spair:
        from lmms_ac.scores.spair import dataset_fingerprint, normalize_split

        split = normalize_split(args.split)
        config = {
            "dataset": "spair",
            "data_fingerprint": dataset_fingerprint(args.spair, split, args.limit),
            "split": split,
            "method": args.method,
            "alpha": args.alpha,
            "limit": args.limit,
        }

        def compute_c() -> Any:
            from lmms_ac.scores.correspondence import score_c

            return _value_of(
                score_c(
                    rep(),
                    args.spair,
                    split,
                    method=args.method,
                    alpha=args.alpha,
                    batch_size=args.batch_size,
                    limit=args.limit,
                )
            )

        jobs.append(("C", config, compute_c, split))
    if args.ocr:
        from lmms_ac.scores.ocr_pairs import OcrPairsConfig
        from lmms_ac.scores.ocr_score import SCORE_NAME

        config = {
            "dataset": "ocr_pairs",
            **OcrPairsConfig(n=args.ocr_n, seed=args.ocr_seed).to_config(),
            "method": args.method,
            "alpha": args.alpha,
        }

        def compute_ocr() -> Any:
            import PIL

            from lmms_ac.scores.ocr_score import score_c_ocr

            # the generated pairs live in a folder next to --out (not /tmp), owned by this row's claim:
            # removed on success, failure or SIGTERM, and cleared by the next run after a SIGKILL
            with ocr_workdir(args.out, variant, vision, config) as workdir:
                value = _value_of(
                    score_c_ocr(
                        rep(),
                        n=args.ocr_n,
                        seed=args.ocr_seed,
                        method=args.method,
                        alpha=args.alpha,
                        batch_size=args.batch_size,
                        workdir=workdir,
                    )
                )
            value.details["pillow"] = PIL.__version__
            return value

        jobs.append((SCORE_NAME, config, compute_ocr, "generated"))

    for score, config, compute, split in jobs:
        row = record_score(
            args.out,
            variant=variant,
            vision=vision,
            score=score,
            config=config,
            compute=compute,
            method=args.method,
            split=split,
            force=args.force,
        )
        print(row_summary(row, args.out))
        if score != "C" and row.get("details"):  # C_ocr: its chance and same-position references beside it
            from lmms_ac.scores.ocr_score import baseline_summary

            refs = baseline_summary(row["details"])
            if refs:
                print(f"{row['variant']}\t{score} references: {refs}")
    return 0


def check_store(out: str) -> None:
    """Before any work: ``--out`` must be writable and, if it exists, a scores CSV that reads cleanly."""
    from lmms_ac.io import check_writable
    from lmms_ac.scores.store import read_scores

    check_writable(out, what="--out scores file")
    read_scores(out)


def row_summary(row: Dict[str, Any], out: str) -> str:
    """One printed line per score: value and whether it was recorded, found, or is being computed elsewhere."""
    if row.get("in_progress"):
        return f"{row['variant']}\t{row['score']}\t-\t(being computed by {row['in_progress']}; skipped, rerun later)"
    state = f"already in {out}, skipped" if row["skipped"] else f"recorded in {out}"
    return f"{row['variant']}\t{row['score']}\t{float(row['value']):.4f}\t({state})"


@contextlib.contextmanager
def ocr_workdir(out: str, variant: str, vision: str, config: Dict[str, Any]) -> Iterator[Path]:
    """A folder next to ``out`` for one C_ocr row's generated pairs, empty at start, removed at the end."""
    from lmms_ac.io import config_hash

    out_path = Path(out)
    work = out_path.with_name(f".{out_path.name}.{config_hash([variant, vision, config])}.ocr-work")
    shutil.rmtree(work, ignore_errors=True)  # left by a run killed outright (the row claim makes us its only user)
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cmd_make_ocr_pairs(args: argparse.Namespace) -> int:
    from lmms_ac.io import check_writable
    from lmms_ac.scores.ocr_pairs import make_ocr_pairs

    check_writable(args.to, directory=True, what="--to folder")

    root = make_ocr_pairs(args.to, n=args.n, seed=args.seed, split=args.split)
    print(f"wrote {args.n} OCR pairs to {Path(root)}", file=sys.stdout)
    return 0
