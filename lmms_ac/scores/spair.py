"""Reader (and writer) for the SPair-71k layout.

Layout read here, as the released dataset has it::

    ROOT/JPEGImages/<category>/<imname>.jpg
    ROOT/PairAnnotation/{trn,val,test}/<id>-<src>-<trg>:<category>.json

Each pair file holds ``src_imname``, ``trg_imname``, ``category``, ``src_kps``/``trg_kps`` (lists
of ``[x, y]`` in original image pixels, index-matched), ``src_bndbox``/``trg_bndbox``
(``[x1, y1, x2, y2]``) and, in the real files, also ``kps_ids``, ``src_imsize``/``trg_imsize``
(``[width, height, channels]``), ``pair_id``, ``mirror``, ``viewpoint_variation``... which are kept
in ``extra``. The released pair files list only keypoints annotated in both images, but processed
copies pad with ``-1`` or ``null``: such points are marked invisible (``NaN``) here and never count.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]

SPLITS = ("trn", "val", "test")
_SPLIT_ALIASES = {"train": "trn", "training": "trn", "validation": "val", "valid": "val", "eval": "test"}
_CORE_FIELDS = {"src_imname", "trg_imname", "category", "src_kps", "trg_kps", "src_bndbox", "trg_bndbox"}


@dataclass(frozen=True)
class SPairPair:
    """One annotated pair; keypoints are ``[K, 2]`` float arrays (x, y) with ``NaN`` rows for
    points not visible in that image."""

    name: str
    category: str
    src_path: Path
    trg_path: Path
    src_kps: np.ndarray
    trg_kps: np.ndarray
    src_bbox: tuple
    trg_bbox: tuple
    extra: Dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def visible(self) -> np.ndarray:
        """Boolean ``[K]``: the keypoint is visible in both images (the only ones that count)."""
        return ~(np.isnan(self.src_kps).any(axis=1) | np.isnan(self.trg_kps).any(axis=1))

    @property
    def trg_bbox_size(self) -> float:
        """``max(h, w)`` of the target bounding box: the PCK threshold unit."""
        x1, y1, x2, y2 = self.trg_bbox
        return float(max(x2 - x1, y2 - y1))


def normalize_split(split: str) -> str:
    """``'test'``/``'val'``/``'trn'`` (``'train'`` accepted); unknown names raise with a suggestion."""
    name = _SPLIT_ALIASES.get(split, split)
    if name not in SPLITS:
        close = difflib.get_close_matches(split, list(SPLITS) + list(_SPLIT_ALIASES), n=1, cutoff=0.5)
        hint = f"; did you mean {_SPLIT_ALIASES.get(close[0], close[0])!r}?" if close else ""
        raise ValueError(f"unknown SPair split {split!r}{hint} Known: {', '.join(SPLITS)}")
    return name


def parse_keypoints(raw: Any) -> np.ndarray:
    """``[[x, y], ...]`` (entries may be ``null``, negative or NaN for invisible) -> ``[K, 2]`` float
    array with ``NaN`` rows for invisible points. A ``{id: [x, y] | null}`` dict (the per-image
    annotation style) is read in key order."""
    if raw is None:
        return np.zeros((0, 2))
    if isinstance(raw, dict):
        raw = [raw[k] for k in sorted(raw, key=lambda k: (len(str(k)), str(k)))]
    out = np.full((len(raw), 2), np.nan)
    for i, point in enumerate(raw):
        if point is None or len(point) < 2 or point[0] is None or point[1] is None:
            continue
        x, y = float(point[0]), float(point[1])
        if math.isfinite(x) and math.isfinite(y) and x >= 0 and y >= 0:
            out[i] = (x, y)
    return out


def _bbox(raw: Any, what: str, source: Path) -> tuple:
    if raw is None or len(raw) != 4:
        raise ValueError(f"{source}: {what} must be [x1, y1, x2, y2], got {raw!r}")
    return tuple(float(v) for v in raw)


def read_pair(path: PathLike, image_root: PathLike) -> SPairPair:
    """Read one pair annotation file; image paths are resolved under ``image_root`` (JPEGImages)."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        record = json.load(fh)
    missing = sorted(k for k in _CORE_FIELDS if k not in record)
    if missing:
        raise ValueError(f"{path}: not an SPair pair annotation (missing {', '.join(missing)})")
    src_kps, trg_kps = parse_keypoints(record["src_kps"]), parse_keypoints(record["trg_kps"])
    if len(src_kps) != len(trg_kps):
        raise ValueError(f"{path}: src_kps has {len(src_kps)} points but trg_kps has {len(trg_kps)}")
    category = str(record["category"])
    image_root = Path(image_root)
    return SPairPair(
        name=path.stem,
        category=category,
        src_path=image_root / category / record["src_imname"],
        trg_path=image_root / category / record["trg_imname"],
        src_kps=src_kps,
        trg_kps=trg_kps,
        src_bbox=_bbox(record["src_bndbox"], "src_bndbox", path),
        trg_bbox=_bbox(record["trg_bndbox"], "trg_bndbox", path),
        extra={k: v for k, v in record.items() if k not in _CORE_FIELDS},
    )


def pair_files(root: PathLike, split: str = "test") -> List[Path]:
    """Sorted annotation files of one split; a missing layout raises ``FileNotFoundError``."""
    root = Path(root)
    split = normalize_split(split)
    ann_dir = root / "PairAnnotation" / split
    if not (root / "JPEGImages").is_dir():
        raise FileNotFoundError(
            f"{root}: no JPEGImages/ folder; expected the SPair-71k layout (JPEGImages/, PairAnnotation/)"
        )
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"{ann_dir} does not exist; expected SPair-71k pair annotations for split {split!r}")
    files = sorted(ann_dir.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{ann_dir} holds no *.json pair annotations")
    return files


def load_pairs(
    root: PathLike,
    split: str = "test",
    *,
    limit: Optional[int] = None,
    categories: Optional[Iterable[str]] = None,
) -> List[SPairPair]:
    """All pairs of a split in file-name order (optionally the first ``limit`` / some categories)."""
    wanted = set(categories) if categories is not None else None
    image_root = Path(root) / "JPEGImages"
    pairs: List[SPairPair] = []
    for path in pair_files(root, split):
        if limit is not None and len(pairs) >= limit:
            break
        pair = read_pair(path, image_root)
        if wanted is None or pair.category in wanted:
            pairs.append(pair)
    return pairs


def dataset_fingerprint(root: PathLike, split: str = "test", limit: Optional[int] = None) -> str:
    """A short hash of a split's annotation file names (cheap; independent of where ROOT lives)."""
    import hashlib

    names = [p.name for p in pair_files(root, split)]
    if limit is not None:
        names = names[:limit]
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def write_pair(root: PathLike, split: str, record: Dict[str, Any], name: Optional[str] = None) -> Path:
    """Write one pair annotation in the real layout (used by generators and test fixtures).

    ``name`` defaults to the SPair pattern ``<pair_id>-<src stem>-<trg stem>:<category>``."""
    from lmms_ac.io import atomic_write_text

    missing = sorted(k for k in _CORE_FIELDS if k not in record)
    if missing:
        raise ValueError(f"pair record lacks {', '.join(missing)}")
    if name is None:
        pid = int(record.get("pair_id", 0))
        name = f"{pid:06d}-{Path(record['src_imname']).stem}-{Path(record['trg_imname']).stem}:{record['category']}"
    path = Path(root) / "PairAnnotation" / normalize_split(split) / f"{name}.json"
    return atomic_write_text(path, json.dumps(record, indent=1))


def image_dir(root: PathLike, category: str) -> Path:
    """``ROOT/JPEGImages/<category>`` (created)."""
    path = Path(root) / "JPEGImages" / category
    path.mkdir(parents=True, exist_ok=True)
    return path


def keypoints_to_json(kps: Sequence[Sequence[float]], ndigits: int = 2) -> List[List[float]]:
    """Round ``[K, 2]`` keypoints for writing (invisible rows become ``[-1, -1]``, as processed
    SPair copies write them)."""
    out = []
    for x, y in np.asarray(kps, dtype=float).reshape(-1, 2):
        visible = np.isfinite(x) and np.isfinite(y)
        out.append([round(float(x), ndigits), round(float(y), ndigits)] if visible else [-1.0, -1.0])
    return out
