"""The scores CSV: one row per (variant, score name, config hash), shared by every score command.

``record_score`` is the one entry point a score command needs (``score-c`` uses it; ``score-a``
is meant to reuse it unchanged): it hashes the configuration, skips (and logs) work already in the
file, otherwise computes, then appends the row by read + append + atomic rewrite under a lock, so
earlier rows are never lost. Columns: ``SCORE_COLUMNS``; ``provenance`` and ``details`` hold JSON.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

from loguru import logger

from lmms_ac.io import PathLike, atomic_write_text, config_hash, provenance

SCORE_COLUMNS = [
    "variant", "vision", "score", "value", "n", "method", "split",
    "config_hash", "time", "provenance", "details",
]


@dataclass
class ScoreValue:
    """What a score computation returns to ``record_score``."""

    value: float
    n: int
    details: Dict[str, Any] = field(default_factory=dict)


def read_scores(path: PathLike) -> List[Dict[str, str]]:
    """All rows of a scores CSV (``[]`` when it does not exist); refuses a file of another shape."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("variant", "score", "value", "config_hash") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} is not a scores CSV (missing columns {', '.join(missing)})")
        return [dict(row) for row in reader]


def find_score(path: PathLike, variant: str, score: str, chash: str) -> Optional[Dict[str, str]]:
    """The row recorded for (variant, score, config hash), if any."""
    for row in read_scores(path):
        if row["variant"] == variant and row["score"] == score and row["config_hash"] == chash:
            return row
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``<path>.lock`` (POSIX) so concurrent appends do not race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a") as fh:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX: best effort
            pass
        yield


def _to_csv(rows: List[Mapping[str, Any]], columns: List[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return buf.getvalue()


def append_score(path: PathLike, row: Mapping[str, Any], *, replace: bool = False) -> Path:
    """Append one row (read, append, atomic rewrite). Columns found in the file but not in
    ``SCORE_COLUMNS`` are kept. With ``replace``, rows with the same (variant, score, config_hash)
    are dropped first; without it such a row already present is an error."""
    path = Path(path)
    row = {k: (json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v) for k, v in row.items()}
    key = (row.get("variant"), row.get("score"), row.get("config_hash"))
    with _locked(path):
        rows = read_scores(path)
        same = [r for r in rows if (r["variant"], r["score"], r["config_hash"]) == key]
        if same and not replace:
            raise FileExistsError(f"{path} already holds {key[1]} for variant {key[0]!r} (config {key[2]}); "
                                  "pass replace/--force to recompute")
        rows = [r for r in rows if (r["variant"], r["score"], r["config_hash"]) != key] + [row]
        columns = SCORE_COLUMNS + [c for r in rows for c in r if c not in SCORE_COLUMNS]
        columns = list(dict.fromkeys(columns))
        atomic_write_text(path, _to_csv(rows, columns), overwrite=True)
    return path


# --------------------------------------------------------------------------------------------
# Shared by every score command (score-c now, score-a later): same out-file convention.
# --------------------------------------------------------------------------------------------
def record_score(
    out: PathLike,
    *,
    variant: str,
    vision: str,
    score: str,
    config: Mapping[str, Any],
    compute: Callable[[], ScoreValue],
    method: str = "",
    split: str = "",
    force: bool = False,
) -> Dict[str, Any]:
    """Compute and append one score row unless ``out`` already has it for this config.

    ``config`` must hold everything that changes the value (it is hashed together with the score
    name and vision spec; the variant is part of the row key). Returns the row (the existing one
    when skipped, with ``skipped=True``)."""
    full_config = {"score": score, "vision": vision, **dict(config)}
    chash = config_hash(full_config)
    if not force:
        existing = find_score(out, variant, score, chash)
        if existing is not None:
            logger.info(f"{score} of variant {variant!r} already in {out} "
                        f"(config {chash}, value {existing['value']}); skipping")
            return {**existing, "skipped": True}
    result = compute()
    row = {
        "variant": variant,
        "vision": vision,
        "score": score,
        "value": repr(float(result.value)),
        "n": int(result.n),
        "method": method,
        "split": split,
        "config_hash": chash,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(full_config),
        "details": {"config": full_config, **result.details},
    }
    append_score(out, row, replace=force)
    logger.info(f"{score} of variant {variant!r} = {float(result.value):.4f} (n={result.n}) appended to {out}")
    return {**row, "skipped": False}
