"""The runs behind ``lmms-ac policy`` and ``lmms-ac plot policy``: which policies a ``--policy`` choice simulates,
the simulation with its CSV and figures, and the text table of recall against budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from lmms_ac.law.data import BenchmarkData
from lmms_ac.law.fit_run import Note, ReportRun, no_note
from lmms_ac.law.inputs import InputSettings, load_inputs
from lmms_ac.law.policies import POLICY_REGISTRY, policy_names, simulable_policies
from lmms_ac.law.simulation import PolicyReport, simulate


def policies_for(name: str) -> List[str]:
    """A --policy choice -> the policies simulated (each with the random baseline; ``all``: every one)."""
    if name == "all":
        return policy_names()
    if name not in policy_names():
        from lmms_ac.registry import UnknownEntryError

        raise UnknownEntryError("policy", name, policy_names() + ["all"])
    baselines = [n for n in policy_names() if POLICY_REGISTRY.get(n).baseline]
    return [name] + [b for b in baselines if b != name]


def simulated_policies(name: str, data: Dict[str, BenchmarkData], note: Note = no_note) -> List[str]:
    """``policies_for`` minus the prior policies for ``all`` on a single benchmark (no other to learn from)."""
    pols = policies_for(name)
    if name == "all":
        for p in sorted(set(pols) - set(simulable_policies(len(data), pols))):
            note(
                f"note: the {p} policy needs at least {POLICY_REGISTRY.get(p).min_benchmarks} benchmarks "
                f"({len(data)} given; its prior is the law on the others); left out"
            )
        pols = simulable_policies(len(data), pols)
    return pols


@dataclass(frozen=True)
class PolicySettings:
    """The options of ``lmms-ac policy`` (the simulation)."""

    inputs: InputSettings
    policy: str = "region"
    ranking: str = "measured"
    acquisition: str = "ei"
    runs: int = 1000
    seed: int = 0
    ucb_beta: float = 2.0
    ucb_lambda: float = 0.1
    out: Optional[str] = None  # recall curves CSV
    plot: Optional[str] = None  # figure folder
    formats: Sequence[str] = ()
    overwrite: bool = False
    config: Mapping[str, Any] = field(default_factory=dict)  # provenance of the outputs


@dataclass
class PolicyRun(ReportRun):
    """The simulated curves, the files written and the provenance of ``--json``."""

    report: PolicyReport

    def text(self) -> str:
        return policy_text(self.report)


def run_policy(s: PolicySettings, note: Note = no_note) -> PolicyRun:
    """Simulate the policies on the input, then write the CSV and figures asked for."""
    from lmms_ac.results.output import write_csv

    if s.runs < 1:
        raise ValueError(f"--runs must be at least 1, got {s.runs}")
    data = load_inputs(s.inputs)
    report = simulate(
        data,
        simulated_policies(s.policy, data, note),
        runs=s.runs,
        seed=s.seed,
        ucb_beta=s.ucb_beta,
        ucb_lambda=s.ucb_lambda,
        ranking=s.ranking,
        acquisition=s.acquisition,
    )
    run = PolicyRun(report, dict(s.config))
    if s.out:
        run.written += write_csv(report.to_frame(), s.out, run.config, overwrite=s.overwrite)
    if s.plot:
        from lmms_ac.law.plots import plot_recall_curves

        out = Path(s.plot)
        for top in (3, 1):
            run.figures += plot_recall_curves(report, out / f"policy_recall{top}", list(s.formats), s.overwrite, top)
        note(f"wrote {len(run.figures)} figure file(s) to {out}")
    return run


@dataclass(frozen=True)
class PlotPolicySettings:
    """The options of ``lmms-ac plot policy``."""

    inputs: InputSettings
    out_dir: str
    policy: str = "all"
    ranking: str = "measured"
    runs: int = 1000
    seed: int = 0
    top: int = 3
    formats: Sequence[str] = ()
    overwrite: bool = False


def run_plot_policy(s: PlotPolicySettings, note: Note = no_note) -> List[Path]:
    """Simulate and write the Recall@top curves; the files written."""
    from lmms_ac.law.plots import plot_recall_curves

    data = load_inputs(s.inputs)
    report = simulate(data, simulated_policies(s.policy, data, note), runs=s.runs, seed=s.seed, ranking=s.ranking)
    out = Path(s.out_dir)
    return plot_recall_curves(report, out / f"policy_recall{s.top}", list(s.formats), s.overwrite, s.top)


def policy_text(report: PolicyReport) -> str:
    """Anytime and final recall per benchmark, policy and budget, and the mean Recall@3 at k'=4."""
    from lmms_ac.law.recall import METRIC_HELP

    df = report.to_frame()
    tops = sorted(int(c.split("@")[1]) for c in df.columns if c.startswith("anytime_recall@"))
    lines = [
        f"Recall against budget k' ({report.options['runs']} seeded runs per benchmark).",
        f"Ranking: {report.options.get('ranking')} ({report.options.get('ranking_help', '')}).",
        f"  any = {METRIC_HELP['anytime']}",
        f"  fin = {METRIC_HELP['final']}",
        "  random: success when the best setting was trained (any = fin).",
    ]
    if "prior" in report.options:
        lines.append("  prior: evaluated leave-benchmark-out (the prior of each benchmark is the law on the others)")
    for b, g in df.groupby("benchmark", sort=False):
        best = next((c.best for c in report.curves if c.benchmark == b), "")
        lines.append("")
        lines.append(f"{b} (k={int(g['k'].max())}" + (f", best={best})" if best else ")"))
        pols = list(dict.fromkeys(g.policy))
        heads = [f"{p} {m}@{t}" for p in pols for m in ("any", "fin") for t in tops]
        lines.append("  k_  " + " ".join(f"{h:>{max(6, len(h))}}" for h in heads))
        for budget, gb in g.groupby("budget"):
            vals = [r[f"{m}_recall@{t}"] for _, r in gb.iterrows() for m in ("anytime", "final") for t in tops]
            lines.append(f"  {budget:>3} " + " ".join(f"{v:>{max(6, len(h))}.3f}" for h, v in zip(heads, vals)))
    mean = df[df.benchmark == "mean"]
    if (mean.budget == 4).any() and 3 in tops:
        parts = [
            f"{p} {100 * float(g.loc[g.budget == 4, 'anytime_recall@3'].iloc[0]):.1f}% anytime / "
            f"{100 * float(g.loc[g.budget == 4, 'final_recall@3'].iloc[0]):.1f}% final"
            for p, g in mean.groupby("policy", sort=False)
        ]
        lines.append("")
        lines.append("Recall@3 at k'=4, mean over benchmarks: " + ", ".join(parts))
    return "\n".join(lines).replace("k_  ", "k'  ") + "\n"
