"""The run behind ``lmms-ac policy evaluate``: every policy under the protocols that hide what a user could not
know, its CSV of curves, and the text table at one budget with the goal's verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from lmms_ac.law.evaluate import GOAL_BUDGET, GOAL_TOP, Evaluation, evaluate
from lmms_ac.law.inputs import InputSettings, load_inputs
from lmms_ac.law.protocols import EVALUATED
from lmms_ac.law.worlds import WorldOptions
from lmms_ac.strict_csv import read_frame


@dataclass(frozen=True)
class EvaluateSettings:
    """The options of ``lmms-ac policy evaluate``; with no input only the synthetic protocols run."""

    inputs: InputSettings
    protocols: Optional[Sequence[str]] = None  # default: all
    policies: Optional[Sequence[str]] = None  # default: EVALUATED
    worlds: int = 200
    runs: int = 20
    budget: int = 4  # the k' of the text table
    families: Optional[str] = None  # CSV variant,family for leave-family-out
    seed: int = 0
    out: Optional[str] = None  # every curve with its standard error (CSV)
    overwrite: bool = False
    config: Mapping[str, Any] = field(default_factory=dict)  # provenance of the outputs


@dataclass
class EvaluateRun:
    """The evaluation, the files written, the budget of the text table and the provenance of ``--json``."""

    evaluation: Evaluation
    budget: int
    config: Dict[str, Any]
    written: List[Path] = field(default_factory=list)

    def to_json(self) -> str:
        from lmms_ac.results.output import json_document

        return json_document(self.evaluation.to_dict(), self.config)

    def text(self) -> str:
        return evaluate_text(self.evaluation, self.budget)


def run_evaluate(s: EvaluateSettings) -> EvaluateRun:
    """Evaluate the policies and write the curves asked for."""
    from lmms_ac.results.output import write_csv

    if s.runs < 1 or s.worlds < 2 or s.budget < 1:
        raise ValueError(f"--runs and --budget must be >= 1 and --worlds >= 2 (got {s.runs}, {s.budget}, {s.worlds})")
    data = load_inputs(s.inputs) if s.inputs.given else None
    families = read_families(s.families) if s.families else None
    ev = evaluate(
        data,
        list(s.protocols) if s.protocols else None,
        list(s.policies) if s.policies else list(EVALUATED),
        runs=s.runs,
        seed=s.seed,
        options=WorldOptions(worlds=s.worlds, families=families),
    )
    run = EvaluateRun(ev, s.budget, dict(s.config))
    if s.out:
        run.written += write_csv(ev.frame, s.out, run.config, overwrite=s.overwrite)
    return run


def read_families(path_text: str) -> Dict[str, str]:
    """``--families FILE``: a CSV with columns variant, family (the leave-family-out groups)."""
    path = Path(path_text)
    if not path.exists():
        raise FileNotFoundError(f"families file {path} does not exist")
    df = read_frame(path, kind="families CSV")
    missing = [c for c in ("variant", "family") if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: no {missing[0]!r} column (columns: {', '.join(map(str, df.columns))}); need variant,family"
        )
    if df["family"].isna().any() or df["variant"].duplicated().any():
        raise ValueError(f"{path}: every variant needs one non-empty family (one row per variant)")
    return {str(v): str(f) for v, f in zip(df["variant"], df["family"])}


def evaluate_text(ev: Evaluation, budget: int) -> str:
    """Recall at ``budget`` per protocol and policy with standard errors, the goal's verdict and the notes."""
    lines = [
        f"Recall at k'={budget} (mean over worlds ± standard error; {ev.options['runs']} seeded runs per world). "
        "Every policy is credited alike: final = the best setting is trained or in the top-n of the "
        "untrained by the policy's prediction after exactly k' trainings; anytime = at some step <= k'.",
        "",
    ]
    t = ev.table(budget)
    if t.empty:
        raise ValueError(f"--budget {budget}: no protocol has that many candidates (k' runs from 1 to N)")
    tops = sorted(int(c.split("@")[1]) for c in t.columns if c.startswith("final@") and not c.endswith("se"))
    heads = [f"{m}@{n}" for m in ("anytime", "final") for n in tops]
    lines.append(f"{'protocol':<23}{'policy':<13}{'worlds':>7}  " + "  ".join(f"{h:>13}" for h in heads))
    for r in t.to_dict("records"):
        vals = "  ".join(f"{r[h]:>6.3f} ±{r[h + ' se']:.3f}" for h in heads)
        lines.append(f"{r['protocol']:<23}{r['policy']:<13}{r['worlds']:>7}  {vals}")
    goal = ev.goal()
    if goal:
        lines.append("")
        lines.append(
            f"Goal: final Recall@{GOAL_TOP} at k'={GOAL_BUDGET} >= region + 0.05 on leave-family-out and "
            "synthetic-related, never < region - 0.02 on a judged protocol:"
        )
        for pol, g in goal.items():
            diffs = ", ".join(f"{p} {d:+.3f}" for p, d in g["minus_region"].items())
            verdict = {True: "MEETS", False: "no", None: "n/a"}[g["meets_goal"]]
            lines.append(f"  {pol:<12} {verdict:<6} {diffs}")
    lines.append("")
    lines.append(f"best policy on every judged protocol evaluated here: {ev.best_policy()}")
    for n in ev.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines) + "\n"
