"""Request scheduling for shared-prefix inference: which requests share a prefix, and in which batches.

Requests about the same images (equal ``group`` key: the images' content keys) form a group. A
group of two or more shares the longest common prefix of its input ids (image placeholders
included, so the prefix covers system prompt + image tokens + any common question text), capped
per request by ``limit`` so that every request keeps at least the token whose logits it needs. The
groups are laid out one after the other and cut into batches of ``batch_size`` rows, or (with
``max_rows``) into batches of whole groups, so the questions about one image land in the same batch
(or in consecutive batches, where the prefix cache carries the prefix over), shortest first within a
group so that batches hold suffixes of similar length. Each batch lists the resources (prefix keys,
image keys) used for the last time in it, so caches can drop them at once. ``restore_order`` puts
results back in the callers' order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")
MIN_PREFIX = 2  # shorter common prefixes are not worth a separate forward pass


@dataclass(frozen=True)
class Request:
    """What the scheduler needs to know about one request."""

    index: int  # position in the caller's list
    group: Optional[Hashable]  # requests with equal keys show the same images; None never shares
    ids: Tuple[int, ...]  # input ids (one placeholder id per image)
    limit: int  # the prefix may cover at most this many ids
    resources: Tuple[Hashable, ...] = ()  # cache keys this request reads (its images)
    order: Tuple = ()  # groups are sorted by the smallest ``order`` of their requests


@dataclass(frozen=True)
class Planned:
    index: int
    prefix_ids: int  # 0 = no shared prefix
    prefix_key: Optional[Hashable]


@dataclass
class Batch:
    rows: List[Planned]
    release: List[Hashable] = field(default_factory=list)  # resources not needed after this batch


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


def plan(requests: Sequence[Request], batch_size: int, max_rows: Optional[int] = None) -> List[Batch]:
    """Group, assign prefixes and cut into batches (see module docstring). With ``max_rows`` a batch
    holds whole groups (at most ``batch_size`` of them, at most ``max_rows`` rows; a larger group is
    cut into batches of ``max_rows``) instead of ``batch_size`` rows."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    groups: Dict[Hashable, List[Request]] = {}
    singles: List[List[Request]] = []
    for r in requests:
        if r.group is None:
            singles.append([r])
        else:
            groups.setdefault(r.group, []).append(r)
    members = list(groups.items()) + [(None, s) for s in singles]
    members.sort(key=lambda kv: min((r.order, r.index) for r in kv[1]))

    grouped: List[List[Tuple[Planned, Request]]] = []
    for key, rs in members:
        p = 0
        if key is not None and len(rs) >= 2:
            p = min(common_prefix_length([r.ids for r in rs]), min(r.limit for r in rs))
            if p < MIN_PREFIX:
                p = 0
        prefix_key = (key, tuple(rs[0].ids[:p])) if p else None
        # similar lengths side by side: less padding when a group's suffixes fill several batches
        grouped.append([(Planned(r.index, p, prefix_key), r) for r in sorted(rs, key=lambda r: (len(r.ids), r.index))])

    if max_rows is None:
        planned = [x for g in grouped for x in g]
        batches = [planned[i : i + batch_size] for i in range(0, len(planned), batch_size)]
    else:
        batches = _whole_groups(grouped, batch_size, max_rows)
    last_use: Dict[Hashable, int] = {}
    for b, rows in enumerate(batches):
        for p, r in rows:
            for key in r.resources + ((p.prefix_key,) if p.prefix_key is not None else ()):
                last_use[key] = b
    release: Dict[int, List[Hashable]] = {}
    for key, b in last_use.items():
        release.setdefault(b, []).append(key)
    return [Batch([p for p, _ in rows], release.get(b, [])) for b, rows in enumerate(batches)]


def _whole_groups(grouped: List[List[T]], max_groups: int, max_rows: int) -> List[List[T]]:
    batches: List[List[T]] = []
    current: List[T] = []
    n_groups = 0
    for rows in grouped:
        for i in range(0, len(rows), max_rows):
            chunk = rows[i : i + max_rows]
            if current and (len(current) + len(chunk) > max_rows or n_groups + 1 > max_groups):
                batches.append(current)
                current, n_groups = [], 0
            current.extend(chunk)
            n_groups += 1
    if current:
        batches.append(current)
    return batches


def restore_order(results: Dict[int, T], n: int) -> List[T]:
    """``{index: result}`` -> list in index order; every index 0..n-1 must be present."""
    missing = [i for i in range(n) if i not in results]
    if missing:
        raise RuntimeError(f"internal error: no result for {len(missing)} request(s), e.g. index {missing[0]}")
    return [results[i] for i in range(n)]


def group_by(items: Sequence[T], key: Callable[[T], Hashable]) -> Dict[Hashable, List[int]]:
    """Indices of ``items`` per key, keys in first-seen order."""
    out: Dict[Hashable, List[int]] = {}
    for i, item in enumerate(items):
        out.setdefault(key(item), []).append(i)
    return out
