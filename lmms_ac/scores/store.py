"""The scores CSV: one row per (variant, score name, config hash), shared by every score command.

``record_score`` is the one entry point a score run needs (score-a, score-c, the layer probes and
encoder zero-shot all record through it): it hashes the configuration, skips (and logs) work already
in the file, otherwise computes, then appends the row by read + append + atomic rewrite under a lock,
so earlier rows are never lost. Columns: ``SCORE_COLUMNS``; ``provenance`` and ``details`` hold JSON.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from loguru import logger

from lmms_ac.io import PathLike, atomic_write_text, check_writable, config_hash, exit_on_terminate, provenance

SCORE_COLUMNS = [
    "variant",
    "vision",
    "score",
    "value",
    "n",
    "method",
    "split",
    "config_hash",
    "time",
    "provenance",
    "details",
]
#: the columns a file must have to be read as a scores CSV (others, e.g. foreign columns, are kept)
REQUIRED_COLUMNS = ["variant", "score", "value", "config_hash"]


@dataclass
class ScoreValue:
    """What a score computation returns to ``record_score``."""

    value: float
    n: int
    details: Dict[str, Any] = field(default_factory=dict)


#: how to repair a damaged store (appended to every validation message)
STORE_REPAIR = (
    "Fix or delete that row in the file (keep a copy first), then rerun: the row is recomputed if "
    "needed. Nothing was written."
)


def _validators() -> Dict[str, Callable[[str], None]]:
    from lmms_ac import strict_csv as S

    return {
        "variant": S.nonempty,
        "score": S.nonempty,
        "value": S.number,
        "n": S.optional_int,
        "config_hash": S.nonempty,
        "provenance": S.optional_json,
        "details": S.optional_json,
    }


def read_scores(path: PathLike) -> List[Dict[str, str]]:
    """All rows of a scores CSV (``[]`` when it does not exist), every one validated: the header
    (``variant, score, value, config_hash`` at least), the field count, ``value`` a number, ``n``
    an integer, the config hash present, JSON cells whole. A damaged file raises ValueError with
    the line number; nothing is ever rewritten from a file that did not parse cleanly."""
    from lmms_ac.strict_csv import read_records

    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise ValueError(f"scores file {path} is a directory; give a CSV file path (e.g. {path / 'scores.csv'})")
    records = read_records(
        path, required=REQUIRED_COLUMNS, kind="scores CSV", repair=STORE_REPAIR, validators=_validators()
    )
    return records.rows


def read_scores_frame(path: PathLike):
    """A CSV of scores as a pandas frame for the law commands: a scores store (``score-a``/``score-c``
    output: it has the store's columns) is validated row by row as :func:`read_scores` does; any other
    CSV (a hand-written ``variant,A,C`` table) gets the structural checks (field counts, quoting)."""
    from lmms_ac.strict_csv import read_frame

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"scores file {path} is a directory; give a CSV file path")
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        header = next(csv.reader([fh.readline()]), [])
    if all(c in header for c in REQUIRED_COLUMNS):
        return read_frame(
            path,
            kind="scores CSV",
            repair=STORE_REPAIR,
            required=REQUIRED_COLUMNS,
            validators=_validators(),
            final_newline=True,
        )
    return read_frame(path, kind="A/C scores CSV", repair="Fix that row and rerun.")


def newest_rows(frame: Any, variant_col: str = "variant") -> Any:
    """The newest row per (variant, score) of a scores frame (by ``time`` where the frame has it, else the
    last in file order): a rerun under another configuration supersedes the older value."""
    if "time" in frame.columns:
        frame = frame.sort_values("time", kind="stable")
    return frame.drop_duplicates([variant_col, "score"], keep="last")


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


def _claim_path(path: Path, key: tuple) -> Path:
    digest = hashlib.sha256("\0".join(map(str, key)).encode()).hexdigest()[:12]
    return path.with_name(f".{path.name}.{digest}.claim")


@contextlib.contextmanager
def claim_row(path: PathLike, variant: str, score: str, chash: str) -> Iterator[Optional[str]]:
    """Claim the computation of one row of ``path`` for as long as the block runs.

    Yields ``None`` when this process holds the claim, else a description of the process that holds
    it (pid, host, start time), so a concurrent run of the same score skips instead of computing it
    twice. The claim is a non-blocking ``flock`` on ``.<file>.<key>.claim`` next to the store, removed
    on exit; a holder killed outright releases the lock with its process (the file stays, harmless)."""
    path = Path(path)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no claims, the row lock still keeps the file whole
        yield None
        return
    cpath = _claim_path(path, (variant, score, chash))
    cpath.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(cpath, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            yield holder
            return
        try:  # the previous holder may have removed the file between our open and our lock
            same = os.stat(cpath).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(
            f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}"
        )
        fh.flush()
        yield None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(cpath)
        fh.close()


def _to_csv(rows: List[Mapping[str, Any]], columns: List[str]) -> str:
    from lmms_ac.strict_csv import rows_to_csv

    return rows_to_csv(columns, [[row.get(c, "") for c in columns] for row in rows])


def append_score(path: PathLike, row: Mapping[str, Any], *, replace: bool = False) -> Path:
    """Append one row (read, append, atomic rewrite). Columns found in the file but not in
    ``SCORE_COLUMNS`` are kept. With ``replace``, rows with the same (variant, score, config_hash)
    are dropped first; without it such a row already present is an error."""
    path = Path(path)
    row = {
        k: (json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v) for k, v in row.items()
    }
    key = (row.get("variant"), row.get("score"), row.get("config_hash"))
    with _locked(path):
        rows = read_scores(path)
        same = [r for r in rows if (r["variant"], r["score"], r["config_hash"]) == key]
        if same and not replace:
            raise FileExistsError(
                f"{path} already holds {key[1]} for variant {key[0]!r} (config {key[2]}); "
                "pass replace/--force to recompute"
            )
        rows = [r for r in rows if (r["variant"], r["score"], r["config_hash"]) != key] + [row]
        columns = SCORE_COLUMNS + [c for r in rows for c in r if c not in SCORE_COLUMNS]
        columns = list(dict.fromkeys(columns))
        atomic_write_text(path, _to_csv(rows, columns), overwrite=True)
    return path


# --------------------------------------------------------------------------------------------
# Shared by every score run: same out-file convention.
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
    out = check_writable(out, what="scores file")  # before any work: a read-only --out fails now
    read_scores(out)  # and a damaged store is refused before hours of computing, not after
    full_config = {"score": score, "vision": vision, **dict(config)}
    chash = config_hash(full_config)

    def done() -> Optional[Dict[str, Any]]:
        existing = None if force else find_score(out, variant, score, chash)
        if existing is not None:
            logger.info(
                f"{score} of variant {variant!r} already in {out} (config {chash}, value {existing['value']}); skipping"
            )
            return {**existing, "skipped": True}
        return None

    skipped = done()
    if skipped is not None:
        return skipped
    with claim_row(out, variant, score, chash) as holder:
        if holder is not None:
            logger.warning(
                f"{score} of variant {variant!r} (config {chash}) is being computed by {holder} into {out}; "
                "skipping it here (rerun when that run ends to see the value)"
            )
            return {
                "variant": variant,
                "vision": vision,
                "score": score,
                "value": "",
                "config_hash": chash,
                "skipped": True,
                "in_progress": holder,
            }
        skipped = done()  # a concurrent run may have finished it between our check and our claim
        if skipped is not None:
            return skipped
        with exit_on_terminate():  # SIGTERM/SIGHUP unwind normally: claims and temporary folders are removed
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
        try:
            append_score(out, row, replace=force)
        except OSError as err:  # disk full, permissions changed meanwhile: keep the hours of work visible
            raise ValueError(
                f"could not write {out} ({err.strerror or err}); the computed {score} of variant {variant!r} "
                f"is {row['value']} (n={row['n']}, config {chash}): free space or fix permissions and rerun "
                "(the row is recomputed), or add it by hand"
            ) from err
        logger.info(f"{score} of variant {variant!r} = {float(result.value):.4f} (n={result.n}) appended to {out}")
        return {**row, "skipped": False}


def check_store(out: PathLike) -> None:
    """Before any work: ``--out`` must be writable and, if it exists, a scores CSV that reads cleanly."""
    check_writable(out, what="--out scores file")
    read_scores(out)


def row_summary(row: Mapping[str, Any], out: PathLike) -> str:
    """One printed line per score: value and whether it was recorded, found, or is being computed elsewhere."""
    if row.get("in_progress"):
        return f"{row['variant']}\t{row['score']}\t-\t(being computed by {row['in_progress']}; skipped, rerun later)"
    state = f"already in {out}, skipped" if row["skipped"] else f"recorded in {out}"
    return f"{row['variant']}\t{row['score']}\t{float(row['value']):.4f}\t({state})"


def record_rows(
    out: PathLike,
    variant: str,
    vision: str,
    rows: Iterable[Tuple[str, float, int]],
    config: Mapping[str, Any],
    split: str,
    method: str,
    force: bool,
    details: Mapping[str, Any],
) -> List[Dict[str, Any]]:
    """Append already computed (score, value, n) rows through ``record_score`` (existing rows of the same
    config are kept unless ``force``)."""
    recorded = []
    for score, value, n in rows:
        row = record_score(
            out,
            variant=variant,
            vision=vision,
            score=score,
            config=config,
            compute=lambda v=value, n=n: ScoreValue(value=v, n=n, details=dict(details)),
            method=method,
            split=split,
            force=force,
        )
        recorded.append(row)
    return recorded


def stored_rows(
    out: PathLike, variant: str, vision: str, scores: Sequence[str], config: Mapping[str, Any]
) -> Optional[Dict[str, Dict[str, str]]]:
    """``{score: row}`` when every score is already in ``out`` for this config (hashed as ``record_score``
    hashes it), else None."""
    found = {}
    for score in scores:
        row = find_score(out, variant, score, config_hash({"score": score, "vision": vision, **dict(config)}))
        if row is None:
            return None
        found[score] = row
    return found


@dataclass
class RecordedScores:
    """What a score run did: each row as ``record_score`` returned it (computed, already stored, or being
    computed by another run), in the order they were settled."""

    out: str
    variant: str
    vision: str
    rows: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def computed(self) -> List[str]:
        return [r["score"] for r in self.rows if not r.get("skipped")]

    @property
    def skipped(self) -> List[str]:
        """Scores already stored for this config (kept)."""
        return [r["score"] for r in self.rows if r.get("skipped") and not r.get("in_progress")]

    @property
    def in_progress(self) -> List[str]:
        """Scores another run was computing (skipped here)."""
        return [r["score"] for r in self.rows if r.get("in_progress")]
