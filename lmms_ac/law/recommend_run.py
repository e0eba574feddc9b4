"""The run behind ``lmms-ac policy recommend``: read the candidates' (A, C) and the trained scores, the prior law
of the prior policies (refused when its A is another definition), and the next variant to train."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from lmms_ac.law import data as D
from lmms_ac.law.fit_run import Note, no_note
from lmms_ac.law.policies import DEFAULT_POLICY, POLICY_REGISTRY
from lmms_ac.law.prior import LawPrior, law_prior
from lmms_ac.law.recommend import Recommendation, recommend
from lmms_ac.strict_csv import read_frame


@dataclass(frozen=True)
class RecommendSettings:
    """The options of ``lmms-ac policy recommend``."""

    candidates: str  # A/C scores of every candidate
    trained: str  # scores of the trained variants, or a results table
    variant_col: str = "variant"
    a_col: str = "A"
    c_col: str = "C"
    score_col: Optional[str] = None  # default: benchmark or 'score'
    benchmark: Optional[str] = None  # benchmark to optimise when trained is a results table
    metric: Optional[Sequence[str]] = None  # TASK=METRIC assignments
    policy: str = DEFAULT_POLICY
    prior: Optional[str] = None  # bundled example or wide CSV (prior policies only)
    allow_a_mismatch: bool = False
    expected_worlds: int = 100
    prior_benchmarks: Optional[Sequence[str]] = None
    prior_a_col: str = "A"
    prior_c_col: str = "C"
    acquisition: str = "ei"
    seed: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)  # provenance of --json


@dataclass
class RecommendRun:
    """The recommendation and the provenance of ``--json``."""

    recommendation: Recommendation
    config: Dict[str, Any]

    def to_json(self) -> str:
        from lmms_ac.results.output import json_document

        return json_document(self.recommendation.to_dict(), self.config)

    def text(self) -> str:
        return recommend_text(self.recommendation)


def a_definition(column: str) -> str:
    """The A score a column holds, from its name: ``A_embed_{benchmark}`` / ``A_embed_mme`` -> ``A_embed``."""
    base = column.replace("_{benchmark}", "").replace("{benchmark}", "")
    return "A_embed" if base.startswith("A_embed") else base


def load_prior(s: RecommendSettings, note: Note = no_note) -> Tuple[LawPrior, str]:
    """The prior law of the prior policies and its A definition: from a table the user names (a bundled example
    or a wide CSV), refused when its A is another definition than the candidates' (unless allow_a_mismatch)."""
    name = str(s.prior)
    prior_a = str(D.EXAMPLES[name]["a_col"]) if name in D.EXAMPLES else s.prior_a_col
    mine, theirs = a_definition(s.a_col), a_definition(prior_a)
    if mine != theirs:
        msg = (
            f"the prior's A is {theirs!r} ({prior_a}) but the candidates' A is {mine!r} ({s.a_col}): another "
            "definition, so the prior's law does not apply to these candidates"
        )
        if not s.allow_a_mismatch:
            raise ValueError(msg + "; use a prior computed with the same A, or --allow-a-mismatch to use it anyway")
        note(f"WARNING: {msg}; used anyway (--allow-a-mismatch)")
    if name in D.EXAMPLES:
        return law_prior(D.load_example(name)), theirs
    path = Path(name)
    if not path.exists():
        raise ValueError(
            f"--prior {name!r} is neither a bundled example ({', '.join(D.EXAMPLES)}) nor an existing wide CSV"
        )
    if not s.prior_benchmarks:
        raise ValueError("--prior FILE needs --prior-benchmarks b1,b2 (its score columns)")
    return law_prior(
        D.from_wide(
            read_frame(path, kind="wide CSV"),
            setting_col="setting",
            a_col=s.prior_a_col,
            c_col=s.prior_c_col,
            benchmarks=list(s.prior_benchmarks),
            source=str(path),
        )
    ), theirs


def read_trained(s: RecommendSettings) -> Dict[str, float]:
    """``{variant: score}`` of the trained variants: a variant + score CSV, or a results table's benchmark."""
    import pandas as pd

    from lmms_ac.results.table import TABLE_COLUMNS, clean_scores, parse_assignments, validate_table

    path = Path(s.trained)
    if not path.exists():
        raise FileNotFoundError(f"trained scores file {path} does not exist")
    df = read_frame(path, kind="trained scores CSV")
    if all(c in df.columns for c in TABLE_COLUMNS):
        if not s.benchmark:
            raise ValueError(f"{path} is a results table: choose the benchmark to optimise with --benchmark NAME")
        metric = list(s.metric) if s.metric else None
        scores = clean_scores(validate_table(df, str(path)), [s.benchmark], parse_assignments(metric))
        return {str(k): float(v) for k, v in scores[s.benchmark].dropna().items()}
    col = s.score_col or s.benchmark or "score"
    for c, what in ((s.variant_col, "variant"), (col, "score")):
        if c not in df.columns:
            raise ValueError(
                f"{path}: no {what} column {c!r} (columns: {', '.join(map(str, df.columns))}); "
                f"choose it with --{'variant-col' if what == 'variant' else 'score-col'}"
            )
    names = [str(v) for v in df[s.variant_col]]
    if len(set(names)) != len(names):
        dups = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}: duplicate variants {', '.join(dups)}; keep one row per variant")
    vals = pd.to_numeric(df[col], errors="coerce")
    if vals.isna().any():
        bad = [n for n, v in zip(names, vals) if pd.isna(v)]
        raise ValueError(f"{path}: column {col!r} is empty or non-numeric for {', '.join(bad)}; fix or remove them")
    return dict(zip(names, vals.astype(float)))


def run_recommend(s: RecommendSettings, note: Note = no_note) -> RecommendRun:
    """Check the policy against the prior, read the inputs and recommend."""
    spec = POLICY_REGISTRY.get(s.policy)
    if spec.uses_prior and not s.prior:
        raise ValueError(
            f"the {s.policy} policy needs a prior from a table you name: --prior FILE --prior-benchmarks b1,b2 "
            "(or --prior law-v1, whose A is A_embed); its A and C must be the candidates' definitions"
        )
    if s.prior and not spec.uses_prior:
        raise ValueError(f"--prior is read only by the prior policies (prior, prior-check), not by {s.policy}")
    ac = D.read_ac_scores(s.candidates, variant_col=s.variant_col, a_col=s.a_col, c_col=s.c_col, skip_missing=True)
    trained = read_trained(s)
    prior = load_prior(s, note)[0] if spec.uses_prior else None
    rec = recommend(
        list(ac.index),
        ac["A"].to_numpy(),
        ac["C"].to_numpy(),
        trained,
        policy=s.policy,
        seed=s.seed,
        prior=prior,
        acquisition=s.acquisition,
        expected_worlds=s.expected_worlds,
    )
    if s.policy == DEFAULT_POLICY:
        rec.notes.insert(
            0,
            f"{DEFAULT_POLICY} is the default: the policy `lmms-ac policy evaluate` found above region on "
            "every protocol that hides what a user could not know (README: Judging a policy)",
        )
    return RecommendRun(rec, dict(s.config))


def recommend_text(rec: Recommendation) -> str:
    """The next variant, why, the expected recall, the order or region cells, the notes and the ranking."""
    lines: List[str] = [f"next to train ({rec.policy} policy): {rec.next if rec.next else '(nothing left)'}"]
    if rec.why:
        lines.append(f"  why: {rec.why}")
    if rec.expected:
        parts = [f"{k} {v:.2f}" for k, v in rec.expected.items() if k != "worlds"]
        lines.append(
            f"  expected ({int(rec.expected['worlds'])} random laws on these candidates' (A, C)): " + ", ".join(parts)
        )
    if rec.level is not None:
        lines.append(f"  region level {rec.level}; eligible cells: " + "; ".join(rec.options))
    elif rec.options:
        lines.append("  order of the untrained candidates: " + ", ".join(rec.options))
    for n in rec.notes:
        lines.append(f"  note: {n}")
    lines.append("")
    lines.append(rec.ranking.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return "\n".join(lines)
