"""The worlds of the evaluation protocols (``lmms_ac.law.protocols``): what a policy sees and what it is judged on.

A world is one target benchmark: its candidates' (A, C), their scores (read by a policy only once
trained) and the source benchmarks a prior policy may learn from. Definitions:
docs/METHODS.md#choosing-what-to-train.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from lmms_ac.law.data import BenchmarkData
from lmms_ac.law.protocols import SHAPES
from lmms_ac.law.sampling import law_features, normalize_plane

#: families of the representations of the law tables, by name (first match wins); other names: the part
#: before the first digit, '-', '_', ':' or '@' (lower case), so "siglip2-so400m" -> "siglip"
FAMILY_PATTERNS = (
    (r"\+", "combination"),
    (r"^(open)?clip", "clip"),
    (r"^siglip", "siglip"),
    (r"^dino", "dinov2"),
    (r"^(sd|stable.?diffusion|dit|sdxl)", "diffusion"),
)


def family_of(name: str) -> str:
    """The family of a representation's name (see ``FAMILY_PATTERNS``)."""
    low = name.strip().lower()
    for pattern, fam in FAMILY_PATTERNS:
        if re.search(pattern, low):
            return fam
    return re.split(r"[\d\-_:@.]", low, maxsplit=1)[0] or low


@dataclass
class World:
    """One target benchmark as a protocol presents it."""

    name: str
    group: str
    settings: tuple
    A: np.ndarray
    points: np.ndarray
    y: np.ndarray
    sources: Dict[str, BenchmarkData] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.y)

    @property
    def best(self) -> int:
        return int(np.argmax(self.y))


@dataclass
class WorldOptions:
    worlds: int = 200  # synthetic worlds per shape; permutations in all for the permuted control
    k: int = 13  # synthetic candidates per world (the law-v1 table has 13)
    sources: int = 4  # synthetic source benchmarks
    noise: float = 0.3  # synthetic noise sd, relative to the law's spread over the candidates
    families: Optional[Mapping[str, str]] = None  # setting -> family (default: ``family_of``)


def _scored(d: BenchmarkData) -> BenchmarkData:
    m = d.scored
    return BenchmarkData(d.benchmark, tuple(s for s, k in zip(d.settings, m) if k), d.A[m], d.C[m], d.score[m])


def _subset(d: BenchmarkData, keep: np.ndarray) -> BenchmarkData:
    return BenchmarkData(
        d.benchmark, tuple(s for s, k in zip(d.settings, keep) if k), d.A[keep], d.C[keep], d.score[keep]
    )


def _world(name: str, group: str, d: BenchmarkData, sources: Dict[str, BenchmarkData]) -> World:
    return World(name, group, d.settings, d.A, normalize_plane(d.A, d.C), d.score, sources)


def _usable_sources(sources: Dict[str, BenchmarkData]) -> Dict[str, BenchmarkData]:
    """Sources with enough scored, non-constant settings to carry a law (``prior.source_weights``)."""
    return {b: d for b, d in sources.items() if d.n_scored >= 3 and np.ptp(d.score[d.scored]) > 0}


def table_worlds(data: Mapping[str, BenchmarkData], opts: WorldOptions, rng: np.random.Generator) -> List[World]:
    """Each benchmark as the target, the other benchmarks (same settings) as sources."""
    data = {b: _scored(d) for b, d in data.items() if d.n_scored >= 2}  # a world needs 2 candidates
    return [_world(b, "table", d, _usable_sources({o: e for o, e in data.items() if o != b})) for b, d in data.items()]


def family_worlds(data: Mapping[str, BenchmarkData], opts: WorldOptions, rng: np.random.Generator) -> List[World]:
    """For every family F and target benchmark b: b's settings as candidates; sources: the other benchmarks
    without F's settings."""
    data = {b: _scored(d) for b, d in data.items() if d.n_scored >= 2}  # a world needs 2 candidates
    fam = dict(opts.families or {})
    out = []
    for b, d in data.items():
        fams = [fam.get(s, family_of(s)) for s in d.settings]
        for f in dict.fromkeys(fams):
            sources = {}
            for o, e in data.items():
                if o != b:
                    sources[o] = _subset(e, np.array([fam.get(s, family_of(s)) != f for s in e.settings]))
            out.append(_world(f"{b} without {f}", f, d, _usable_sources(sources)))
    return out


def family_best_hidden_worlds(
    data: Mapping[str, BenchmarkData], opts: WorldOptions, rng: np.random.Generator
) -> List[World]:
    """The leave-family-out worlds whose best setting is in the hidden family."""
    fam = dict(opts.families or {})
    return [
        w
        for w in family_worlds(data, opts, rng)
        if fam.get(w.settings[w.best], family_of(w.settings[w.best])) == w.group
    ]


def permuted_worlds(data: Mapping[str, BenchmarkData], opts: WorldOptions, rng: np.random.Generator) -> List[World]:
    """The table's worlds with (A, C) shuffled among the target's settings (``opts.worlds`` in all)."""
    base = table_worlds(data, opts, rng)
    out = []
    per = max(1, -(-opts.worlds // max(1, len(base))))
    for w in base:
        for i in range(per):
            p = rng.permutation(w.k)
            out.append(World(f"{w.name} #{i}", "permuted", w.settings, w.A[p], w.points[p], w.y, w.sources))
    return out


def cloud(shape: str, k: int, rng: np.random.Generator) -> np.ndarray:
    """k (A, C) points of a shape: uniform square, correlated Gaussian, or clusters (families)."""
    if shape == "uniform":
        return rng.random((k, 2))
    if shape == "correlated":
        rho = rng.uniform(-0.3, 0.9)
        return rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=k)
    if shape == "clusters":
        n = int(rng.integers(3, 6))
        centres = rng.random((n, 2))
        return centres[rng.integers(n, size=k)] + rng.normal(0, 0.07, (k, 2))
    from lmms_ac.registry import UnknownEntryError

    raise UnknownEntryError("cloud shape", shape, list(SHAPES))


def _scores(points: np.ndarray, w: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    f = law_features(normalize_plane(points[:, 0], points[:, 1])) @ w
    return f + rng.normal(0, noise * (f.std() if f.std() > 0 else 1.0), len(f))


#: (sd of the target's law weights around the shared law, sd of each source's) per relation
RELATION_SPREAD = {"equal": (0.0, 0.05), "related": (0.5, 0.5), "independent": (None, 0.5)}


def synthetic_world(
    shape: str,
    relation: str,
    rng: np.random.Generator,
    opts: WorldOptions,
    points: Optional[np.ndarray] = None,
    name: str = "",
) -> World:
    """One synthetic world: a shared law w0 ~ N(0, I) over (A, C, A², AC, C²); each source draws its own
    candidates (same shape) and scores them with w0 + N(0, s_src²); the target's law is w0 (+ N(0, s_tgt²)),
    or an independent draw; every score gets Gaussian noise (``opts.noise`` times the law's spread)."""
    t_sd, s_sd = RELATION_SPREAD[relation]
    w0 = rng.standard_normal(5)
    w = rng.standard_normal(5) if t_sd is None else w0 + t_sd * rng.standard_normal(5)
    pts = cloud(shape, opts.k, rng) if points is None else np.asarray(points, float)
    y = _scores(pts, w, opts.noise, rng)
    sources = {}
    for j in range(opts.sources):
        sp = cloud(shape, opts.k, rng)
        ys = _scores(sp, w0 + s_sd * rng.standard_normal(5), opts.noise, rng)
        sources[f"s{j}"] = BenchmarkData(f"s{j}", tuple(f"x{i}" for i in range(opts.k)), sp[:, 0], sp[:, 1], ys)
    settings = tuple(f"c{i}" for i in range(len(y)))
    return World(
        name or f"{shape}/{relation}", shape, settings, pts[:, 0], normalize_plane(pts[:, 0], pts[:, 1]), y, sources
    )


def _synthetic(
    relation: str, opts: WorldOptions, rng: np.random.Generator, shapes: Sequence[str] = SHAPES
) -> List[World]:
    return [
        synthetic_world(s, relation, rng, opts, name=f"{s}/{relation}#{i}") for s in shapes for i in range(opts.worlds)
    ]


def synthetic_equal_worlds(data, opts: WorldOptions, rng: np.random.Generator) -> List[World]:
    return _synthetic("equal", opts, rng)


def synthetic_related_worlds(data, opts: WorldOptions, rng: np.random.Generator) -> List[World]:
    return _synthetic("related", opts, rng)


def synthetic_independent_worlds(data, opts: WorldOptions, rng: np.random.Generator) -> List[World]:
    return _synthetic("independent", opts, rng)
