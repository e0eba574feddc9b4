"""Variant families: which perturbations (parameters x seeds) every benchmark gets, one family per
probe (``VARIANTS``), and which families a run generates (``$LMMS_AC_VARIANTS``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

from lmms_ac.benchmarks import Benchmark
from lmms_ac.registry import Registry

from .base import Perturbation
from .catalogue import PERTURBATIONS
from .grammar import parse_perturbation
from .plugins import ensure_plugins
from .probes import DEFAULT_DRAWS

VARIANTS_ENV = "LMMS_AC_VARIANTS"
DEFAULT_SEEDS = 5
DRAWS = DEFAULT_DRAWS  #: seeded noise draws of each importance-score variant (probes.DEFAULT_DRAWS)


@dataclass(frozen=True)
class VariantFamily:
    """Which variants of one probe every benchmark gets.

    ``params``: one dict per variant (constructor arguments of the catalogue class); ``seeds``:
    seeds 0..seeds-1 of each; ``tag_form``: an optional per-benchmark tag ``<base>_<tag_form>``
    formatted with the variant's parameters (e.g. ``tokgroup_m{m}``); ``benchmarks``: restrict to
    these bases (short keys or task names; None = all); ``default``: part of the default set.
    """

    name: str
    probe: str
    params: Tuple[Tuple[Tuple[str, Any], ...], ...] = ((),)
    seeds: int = 1
    default: bool = True
    tag_form: Optional[str] = None
    benchmarks: Optional[Tuple[str, ...]] = None

    def perturbations(self) -> List[Perturbation]:
        cls = PERTURBATIONS.get(self.probe)
        return [cls(**dict(p)).with_seed(s) for p in self.params for s in range(self.seeds)]

    def applies_to(self, bench: Benchmark) -> bool:
        return self.benchmarks is None or bench.key in self.benchmarks or bench.task in self.benchmarks

    def signature(self) -> Any:
        return [
            self.name,
            self.probe,
            [list(map(list, p)) for p in self.params],
            self.seeds,
            self.tag_form,
            list(self.benchmarks) if self.benchmarks is not None else None,
        ]


VARIANTS: Registry[VariantFamily] = Registry("variant family")


def _freeze(params: Iterable[Mapping[str, Any]]) -> Tuple[Tuple[Tuple[str, Any], ...], ...]:
    return tuple(tuple(sorted(dict(p).items())) for p in params)


def register_variants(
    name: str,
    probe: Optional[str] = None,
    params: Iterable[Mapping[str, Any]] = ({},),
    *,
    seeds: Optional[int] = None,
    default: bool = True,
    tag_form: Optional[str] = None,
    benchmarks: Optional[Sequence[str]] = None,
    overwrite: bool = False,
) -> VariantFamily:
    """Register a variant family (``probe`` defaults to ``name``). Each parameter set is checked by
    building the perturbation and reading its string form back (unique, round-trips)."""
    probe = probe or name
    cls = PERTURBATIONS.get(probe)
    seeds = int(seeds if seeds is not None else (DEFAULT_SEEDS if cls.stochastic else 1))
    if seeds < 1:
        raise ValueError(f"variant family {name!r}: seeds must be >= 1, got {seeds}")
    family = VariantFamily(
        name,
        probe,
        _freeze(params),
        seeds,
        bool(default),
        tag_form,
        tuple(benchmarks) if benchmarks is not None else None,
    )
    forms = set()
    for params_ in family.params:
        p = cls(**dict(params_))
        back = parse_perturbation(p.to_string())
        if type(back) is not type(p) or back != p:
            raise ValueError(
                f"variant {p.to_string()!r} of family {name!r} does not read back as itself "
                f"(got {back!r}); make its string form unambiguous"
            )
        if p.to_string() in forms:
            raise ValueError(f"variant family {name!r} lists {p.to_string()!r} twice")
        forms.add(p.to_string())
    if name in VARIANTS and VARIANTS.get(name) == family:
        return family
    VARIANTS.register(name, family, overwrite=overwrite)
    return family


_RATIOS = [{"ratio": round(0.1 * i, 1)} for i in range(1, 10)]
register_variants("patchshuffle", params=[{"n": n} for n in (2, 4, 8, 14)], seeds=DEFAULT_SEEDS)
register_variants("pdrop_random", params=_RATIOS, seeds=DEFAULT_SEEDS)
register_variants("pdrop_salient", params=_RATIOS)  # by attention mass (the paper's definition)
register_variants("pdrop_nonsalient", params=_RATIOS)
# opt-in: selection by cell count (LMMS_AC_VARIANTS=default,pdrop_salient_count,pdrop_nonsalient_count)
register_variants("pdrop_salient_count", "pdrop_salient", params=[{**r, "by": "count"} for r in _RATIOS], default=False)
register_variants(
    "pdrop_nonsalient_count", "pdrop_nonsalient", params=[{**r, "by": "count"} for r in _RATIOS], default=False
)
register_variants("tokperm", seeds=DEFAULT_SEEDS)
# opt-in (LMMS_AC_VARIANTS=default,tokperm_global): across the tiles of LLaVA-NeXT/OneVision; tokperm on one view
register_variants("tokperm_global", seeds=DEFAULT_SEEDS, default=False)
register_variants("synthetic")
register_variants(
    "tokgroup", params=[{"m": m, "group": g} for m in (2, 4) for g in range(m * m)], tag_form="tokgroup_m{m}"
)
# importance scores (opt-in: LMMS_AC_VARIANTS=default,toknoise,...), DRAWS seeded noise draws each
register_variants(
    "toknoise", params=[{"m": 4, "group": g} for g in range(16)], seeds=DRAWS, default=False, tag_form="toknoise_m{m}"
)
register_variants("layernoise", params=[{"layer": layer} for layer in range(0, 33, 4)], seeds=DRAWS, default=False)
register_variants(
    "modnoise",
    params=[{"modality": mod, "layer": layer} for mod in ("image", "text") for layer in (0, 8, 16, 24)],
    seeds=DRAWS,
    default=False,
)


def selected_families(spec: Optional[str] = None) -> List[VariantFamily]:
    """The families named by ``spec`` (default: ``$LMMS_AC_VARIANTS`` or ``default``)."""
    ensure_plugins()
    spec = spec if spec is not None else os.environ.get(VARIANTS_ENV, "")
    words = [w.strip() for w in re.split(r"[,\s]+", spec or "default") if w.strip()] or ["default"]
    chosen: List[str] = []
    for word in words:
        remove = word.startswith("-")
        word = word.lstrip("-+")
        if word == "default":
            names = [n for n in VARIANTS.names() if VARIANTS.get(n).default]
        elif word == "all":
            names = VARIANTS.names()
        else:
            VARIANTS.get(word)  # did-you-mean error for unknown families
            names = [word]
        if remove:
            chosen = [n for n in chosen if n not in names]
        else:
            chosen += [n for n in names if n not in chosen]
    return [VARIANTS.get(n) for n in chosen]
