"""``lmms-ac score-c`` and ``lmms-ac make-ocr-pairs``: arguments in, ``lmms_ac.scores.run_c`` and
``lmms_ac.scores.ocr_pairs`` do the work.

Scores go to one machine-readable CSV (``--out``, default ``scores.csv``), one row per
(variant, score name, config hash), through ``lmms_ac.scores.store.record_score``: a rerun with the
same configuration is skipped (and logged), ``--force`` recomputes and replaces that row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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


def cmd_score_c(args: argparse.Namespace) -> int:
    from lmms_ac.scores.run_c import ScoreCSettings, record_c_scores

    settings = ScoreCSettings(
        vision=tuple(args.vision),
        out=args.out,
        variant=args.variant,
        device=args.device,
        force=args.force,
        spair=args.spair,
        split=args.split,
        method=args.method,
        alpha=args.alpha,
        limit=args.limit,
        batch_size=args.batch_size,
        ocr=args.ocr,
        ocr_n=args.ocr_n,
        ocr_seed=args.ocr_seed,
    )
    record_c_scores(settings, on_line=print)
    return 0


def cmd_make_ocr_pairs(args: argparse.Namespace) -> int:
    from lmms_ac.io import check_writable
    from lmms_ac.scores.ocr_pairs import make_ocr_pairs

    check_writable(args.to, directory=True, what="--to folder")

    root = make_ocr_pairs(args.to, n=args.n, seed=args.seed, split=args.split)
    print(f"wrote {args.n} OCR pairs to {Path(root)}", file=sys.stdout)
    return 0
