"""The run behind ``lmms-ac score-c``: C on an SPair-layout set and/or C_ocr on generated text-image
pairs, each recorded in the scores CSV unless it is already there for its configuration.

Heavy imports (torch, the encoders) happen only when a score is actually computed, and the vision
representation is loaded once, only when some score is not stored yet.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from lmms_ac.io import config_hash
from lmms_ac.scores.store import RecordedScores, ScoreValue, check_store, record_score, row_summary


@dataclass(frozen=True)
class ScoreCSettings:
    """What to score and where to record it (the options of ``score-c``)."""

    vision: Tuple[str, ...]  # representation specs; several are combined part-wise
    out: str
    variant: Optional[str] = None  # row name; default: the vision specs joined by '+'
    device: Optional[str] = None  # default: cuda when available
    force: bool = False
    spair: Optional[str] = None  # SPair-71k root: score C
    split: str = "test"
    method: str = "argmax"
    alpha: float = 0.1
    limit: Optional[int] = None
    batch_size: int = 16
    ocr: bool = False  # score C_ocr on generated pairs
    ocr_n: int = 200
    ocr_seed: int = 0


def load_vision(specs: Sequence[str], device: Optional[str]) -> Any:
    """One representation, or a list of them (combined by the C score) when several specs are given."""
    import torch

    from lmms_ac.vision import load_representation

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    reps = [load_representation(spec, device=device) for spec in specs]
    # a concat: representation is scored part-wise (L2-normalise each part, concatenate, re-normalise)
    parts = [part for rep in reps for part in (getattr(rep, "parts", None) or [rep])]
    return parts[0] if len(parts) == 1 else parts


def score_value(result: Any) -> ScoreValue:
    """A ``CScoreResult`` as the store's value: overall PCK, its pairs, the rest as details."""
    details = result.to_dict()
    for key in ("overall", "n_pairs"):
        details.pop(key)
    return ScoreValue(value=result.overall, n=result.n_pairs, details=details)


@contextlib.contextmanager
def ocr_workdir(out: str, variant: str, vision: str, config: Mapping[str, Any]) -> Iterator[Path]:
    """A folder next to ``out`` for one C_ocr row's generated pairs, empty at start, removed at the end."""
    out_path = Path(out)
    work = out_path.with_name(f".{out_path.name}.{config_hash([variant, vision, config])}.ocr-work")
    shutil.rmtree(work, ignore_errors=True)  # left by a run killed outright (the row claim makes us its only user)
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def score_lines(row: Mapping[str, Any], out: str) -> List[str]:
    """The printed lines of one row: its summary, and for C_ocr its chance and same-position references."""
    lines = [row_summary(row, out)]
    if row["score"] != "C" and row.get("details"):
        from lmms_ac.scores.ocr_score import baseline_summary

        refs = baseline_summary(row["details"])
        if refs:
            lines.append(f"{row['variant']}\t{row['score']} references: {refs}")
    return lines


def record_c_scores(settings: ScoreCSettings, on_line: Callable[[str], None] = lambda line: None) -> RecordedScores:
    """Compute (or find) C and/or C_ocr and record them; ``on_line`` gets each row's lines as it is settled."""
    s = settings
    if not s.spair and not s.ocr:
        raise ValueError("nothing to score: give --spair DIR (score C) and/or --ocr (score C_ocr)")
    if s.alpha <= 0:
        raise ValueError(f"--alpha must be > 0, got {s.alpha}")
    if s.limit is not None and s.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {s.limit}")
    check_store(s.out)
    vision = "+".join(s.vision)
    variant = s.variant or vision
    cache: Dict[str, Any] = {}

    def rep() -> Any:  # loaded only when some score is not in the store yet
        if "rep" not in cache:
            cache["rep"] = load_vision(s.vision, s.device)
        return cache["rep"]

    jobs: List[Tuple[str, Dict[str, Any], Callable[[], ScoreValue], str]] = []
    if s.spair:
        from lmms_ac.scores.spair import dataset_fingerprint, normalize_split

        split = normalize_split(s.split)
        c_config = {
            "dataset": "spair",
            "data_fingerprint": dataset_fingerprint(s.spair, split, s.limit),
            "split": split,
            "method": s.method,
            "alpha": s.alpha,
            "limit": s.limit,
        }

        def compute_c() -> ScoreValue:
            from lmms_ac.scores.correspondence import score_c

            result = score_c(
                rep(), s.spair, split, method=s.method, alpha=s.alpha, batch_size=s.batch_size, limit=s.limit
            )
            return score_value(result)

        jobs.append(("C", c_config, compute_c, split))
    if s.ocr:
        from lmms_ac.scores.ocr_pairs import OcrPairsConfig
        from lmms_ac.scores.ocr_score import SCORE_NAME

        ocr_config = {
            "dataset": "ocr_pairs",
            **OcrPairsConfig(n=s.ocr_n, seed=s.ocr_seed).to_config(),
            "method": s.method,
            "alpha": s.alpha,
        }

        def compute_ocr() -> ScoreValue:
            import PIL

            from lmms_ac.scores.ocr_score import score_c_ocr

            # the generated pairs live in a folder next to the store (not /tmp), owned by this row's claim:
            # removed on success, failure or SIGTERM, and cleared by the next run after a SIGKILL
            with ocr_workdir(s.out, variant, vision, ocr_config) as workdir:
                result = score_c_ocr(
                    rep(),
                    n=s.ocr_n,
                    seed=s.ocr_seed,
                    method=s.method,
                    alpha=s.alpha,
                    batch_size=s.batch_size,
                    workdir=workdir,
                )
                value = score_value(result)
            value.details["pillow"] = PIL.__version__
            return value

        jobs.append((SCORE_NAME, ocr_config, compute_ocr, "generated"))

    run = RecordedScores(out=s.out, variant=variant, vision=vision)
    for score, config, compute, split in jobs:
        row = record_score(
            s.out,
            variant=variant,
            vision=vision,
            score=score,
            config=config,
            compute=compute,
            method=s.method,
            split=split,
            force=s.force,
        )
        run.rows.append(row)
        for line in score_lines(row, s.out):
            on_line(line)
    return run
