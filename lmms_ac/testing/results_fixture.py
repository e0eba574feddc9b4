"""A small study in the real file formats: a tidy results table (``lmms-ac collect``) and a scores
store (``score-a`` / ``score-c``), for tests of the reports built on them.

Scores follow a known degree-2 law of (A, C) plus seeded noise, so a law fit, a policy simulation,
robustness drops over seeds and patch-information-loss maps all have something to show. Task names,
perturbation strings, seeds and severities are produced by the robustness catalogue, as lmms-eval
writes them; nothing here is a published result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from lmms_ac.io import config_hash

#: trained variants (have results) and candidates (A/C only) with their (A, C)
TRAINED: Dict[str, Tuple[float, float]] = {
    "clip-l14-336": (-1.02, 41.0),
    "clip-l14-224": (-1.10, 38.5),
    "siglip-b16": (-1.25, 35.0),
    "openclip-h14": (-1.05, 44.0),
    "dinov2-l": (-1.60, 58.0),
    "concat-clip-dino": (-0.98, 55.0),
    "sd2.1-t1": (-1.75, 47.0),
    "eva-clip-g": (-1.00, 43.0),
    "siglip-so400m": (-0.90, 50.0),
    "mae-l": (-1.90, 52.0),
    "clip-b16": (-1.20, 37.0),
}
CANDIDATES: Dict[str, Tuple[float, float]] = {"siglip2-l16": (-0.95, 46.0), "convnext-xxl": (-1.30, 40.0)}
#: clean task -> (metric, scale: 1 for 0-1 metrics, 2000 for MME perception)
BENCHMARKS: Dict[str, Tuple[str, float]] = {
    "mme": ("mme_perception_score", 2000.0),
    "ok_vqa": ("exact_match", 1.0),
    "textvqa_val": ("exact_match", 1.0),
    "seed": ("seed_image", 1.0),
}
PERTURBATIONS: Dict[str, float] = {"tokperm": 0.12, "patchshuffle4": 0.08, "pdrop_salient30": 0.05}

PathLike = Union[str, Path]


def _law(a: float, c: float, bench: str) -> float:
    """A fraction in (0, 1): a concave quadratic in normalised (A, C), different per benchmark."""
    x, y = (a + 1.8) / 0.9, (c - 35.0) / 25.0
    w = {
        "mme": (0.55, 0.25, 0.10),
        "ok_vqa": (0.45, 0.20, 0.05),
        "textvqa_val": (0.30, 0.35, -0.15),
        "seed": (0.50, 0.15, 0.20),
    }[bench]
    return 0.35 + w[0] * x * 0.5 + w[1] * y * 0.5 + w[2] * x * y * 0.3 - 0.08 * x * x


def result_row(
    variant: str,
    task: str,
    metric: str,
    value: float,
    when: str,
    *,
    perturbation: str = "none",
    severity: str = "",
    seed=None,
    base: str = "",
    chash: str = "",
) -> Dict[str, object]:
    return {
        "variant": variant,
        "task": task,
        "metric": metric,
        "value": value,
        "stderr": np.nan,
        "n": 40,
        "perturbation": perturbation,
        "severity": severity,
        "seed": seed,
        "base_task": base or task,
        "lmms_eval_version": "0.7.3",
        "config_hash": chash or config_hash([variant, task]),
        "time": when,
        "source": f"logs/{variant}/20250301_120000_results.json",
    }


def make_table(
    seeds: Sequence[int] = (0, 1, 2),
    pil_variants: Sequence[str] = ("clip-l14-336", "dinov2-l"),
    m: int = 2,
    noise: float = 0.02,
    seed: int = 0,
    benchmarks: Optional[Sequence[str]] = None,
    perturbations: Optional[Sequence[str]] = None,
) -> pd.DataFrame:
    """The tidy table of a small study (see module doc); ``benchmarks``/``perturbations`` keep a subset."""
    from lmms_ac.robustness.grammar import parse_perturbation, robust_task_name
    from lmms_ac.results.table import validate_table

    rng = np.random.default_rng(seed)
    rows: List[Dict[str, object]] = []
    for i, (v, (a, c)) in enumerate(TRAINED.items()):
        when = f"2025-03-{1 + i:02d}T12:00:00"
        clean = {}
        for b, (metric, scale) in BENCHMARKS.items():
            if benchmarks is not None and b not in benchmarks:
                continue
            frac = float(np.clip(_law(a, c, b) + rng.normal(0, noise), 0.02, 0.98))
            clean[b] = frac
            rows.append(result_row(v, b, metric, frac * scale, when))
            if b == "mme":
                rows.append(result_row(v, b, "mme_cognition_score", frac * 0.8 * 800.0, when))
        for pname, drop in PERTURBATIONS.items():
            if perturbations is not None and pname not in perturbations:
                continue
            p = parse_perturbation(pname)
            sev = [x for x in p.params.values() if isinstance(x, (int, float)) and not isinstance(x, bool)]
            for b in [x for x in ("mme", "textvqa_val", "ok_vqa") if x in clean]:
                metric, scale = BENCHMARKS[b]
                for s in seeds if p.stochastic else (0,):
                    frac = clean[b] * (1.0 - drop * (1.0 + 0.5 * (c - 45.0) / 15.0)) + rng.normal(0, noise / 2)
                    rows.append(
                        result_row(
                            v,
                            robust_task_name(b, p.with_seed(s)),
                            metric,
                            frac * scale,
                            when,
                            perturbation=p.with_seed(0).to_string(),
                            severity=str(sev[0]) if len(sev) == 1 else "",
                            seed=s,
                            base=b,
                        )
                    )
        if v in pil_variants and "mme" in clean:
            metric, scale = BENCHMARKS["mme"]
            for g in range(m * m):
                p = parse_perturbation(f"tokgroup_m{m}_g{g}")
                keep = 0.3 + 0.5 * rng.random()  # the share of the clean score one group keeps
                rows.append(
                    result_row(
                        v,
                        robust_task_name("mme", p),
                        metric,
                        clean["mme"] * keep * scale,
                        when,
                        perturbation=p.to_string(),
                        seed=0,
                        base="mme",
                    )
                )
    return validate_table(pd.DataFrame(rows))


def score_rows(variants: Dict[str, Tuple[float, float]]) -> pd.DataFrame:
    """Rows of a scores store (``lmms_ac.scores.store.SCORE_COLUMNS``): A, C and C_ocr per variant."""
    from lmms_ac.scores.store import SCORE_COLUMNS

    rows = []
    for i, (v, (a, c)) in enumerate(variants.items()):
        for name, value, method in (("A", a, "caption_ll"), ("C", c, "spair_pck"), ("C_ocr", c * 0.6, "ocr_pck")):
            rows.append(
                {
                    "variant": v,
                    "vision": f"clip:tiny/{v}",
                    "score": name,
                    "value": value,
                    "n": 100,
                    "method": method,
                    "split": "test",
                    "config_hash": f"{i:04d}{name:>6}".replace(" ", "0"),
                    "time": f"2025-02-{1 + i:02d}T09:00:00+00:00",
                    "provenance": json.dumps({"lmms_ac_version": "0.1.0", "torch_version": "2.4"}),
                    "details": "{}",
                }
            )
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def write_study(directory: PathLike, **table_kwargs) -> Tuple[Path, Path]:
    """Write ``table.csv`` and ``scores.csv`` of the small study into ``directory``; return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table, scores = directory / "table.csv", directory / "scores.csv"
    make_table(**table_kwargs).to_csv(table, index=False)
    score_rows({**TRAINED, **CANDIDATES}).to_csv(scores, index=False)
    return table, scores
