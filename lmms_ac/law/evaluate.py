"""``policy evaluate``: every policy under the protocols of ``lmms_ac.law.protocols``, with standard errors.

For each protocol, each world (a target benchmark as the protocol presents it) and each policy, the
policy is simulated ``runs`` times (seeded, common random numbers across policies) and its anytime and
final Recall@n curves over k' = 1..N are averaged over the runs; the protocol's recall is the mean over
its worlds, its standard error the standard deviation over worlds / sqrt(worlds). Every policy is
credited by the same rule (``lmms_ac.law.recall``, ranking "measured"): the best setting was trained
or is in the top-n of the untrained by the policy's prediction; ``random-law`` is chance under that rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from lmms_ac.law.data import BenchmarkData
from lmms_ac.law.policies import POLICY_REGISTRY
from lmms_ac.law.prior import law_prior
from lmms_ac.law.protocols import EVALUATED, PROTOCOL_REGISTRY, protocol_names
from lmms_ac.law.recall import DEFAULT_TOPS
from lmms_ac.law.sampling import seed_sequence
from lmms_ac.law.simulation import PolicyContext, policy_hits
from lmms_ac.law.worlds import World, WorldOptions, synthetic_world

#: where the goal is read: final Recall@3 at k' = 4, against the paper's policy
GOAL_BUDGET, GOAL_TOP = 4, 3
REFERENCE_POLICY = "region"


@dataclass
class Evaluation:
    """Recall per protocol, policy, metric, top and budget: mean over worlds and its standard error."""

    frame: pd.DataFrame  # protocol, policy, metric, top, budget, recall, se, worlds
    options: Dict[str, object] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def at(self, protocol: str, policy: str, budget: int = GOAL_BUDGET, top: int = GOAL_TOP, metric: str = "final"):
        """(recall, se) at one budget."""
        f = self.frame
        sel = f[(f.protocol == protocol) & (f.policy == policy) & (f.metric == metric) & (f.top == top)]
        sel = sel[sel.budget == budget]
        if sel.empty:
            raise KeyError(f"no recall for protocol={protocol} policy={policy} budget={budget}")
        return float(sel.recall.iloc[0]), float(sel.se.iloc[0])

    def table(self, budget: int = GOAL_BUDGET) -> pd.DataFrame:
        """One row per protocol and policy at ``budget``: anytime/final Recall@1/@3 with standard errors."""
        f = self.frame[self.frame.budget == budget]
        rows = []
        for (proto, pol), g in f.groupby(["protocol", "policy"], sort=False):
            row: Dict[str, object] = {"protocol": proto, "policy": pol, "worlds": int(g.worlds.iloc[0])}
            for metric in ("anytime", "final"):
                for top in sorted(set(g.top)):
                    r = g[(g.metric == metric) & (g.top == top)]
                    row[f"{metric}@{top}"] = float(r.recall.iloc[0])
                    row[f"{metric}@{top} se"] = float(r.se.iloc[0])
            rows.append(row)
        return pd.DataFrame(rows)

    def goal(self) -> Dict[str, Dict[str, object]]:
        """Per policy: final Recall@3 at k'=4 minus region's on every protocol, and whether the goal holds
        (>= +0.05 on leave-family-out and synthetic-related, never < -0.02 on a judged protocol)."""
        protos = list(dict.fromkeys(self.frame.protocol))
        out: Dict[str, Dict[str, object]] = {}
        if "region" not in set(self.frame.policy):
            return out
        for pol in dict.fromkeys(self.frame.policy):
            diffs = {}
            for p in protos:
                try:
                    diffs[p] = self.at(p, pol)[0] - self.at(p, "region")[0]
                except KeyError:
                    continue
            judged = [p for p in diffs if PROTOCOL_REGISTRY.get(p).judged]
            need = ("leave-family-out", "synthetic-related")
            ok: Optional[bool] = None  # None: a protocol of the goal was not evaluated
            if all(p in diffs for p in need):
                ok = all(diffs[p] >= 0.05 for p in need) and all(diffs[p] >= -0.02 for p in judged)
            out[pol] = {"minus_region": diffs, "meets_goal": ok}
        return out

    def best_policy(self) -> str:
        """Of the policies above region on every judged protocol (final Recall@3 at k'=4), the one with the
        highest mean over them; region when none is."""
        judged = [p for p in dict.fromkeys(self.frame.protocol) if PROTOCOL_REGISTRY.get(p).judged]
        best, best_mean = REFERENCE_POLICY, -1.0
        for pol in dict.fromkeys(self.frame.policy):
            if pol == REFERENCE_POLICY or not POLICY_REGISTRY.get(pol).recommend or not judged:
                continue
            try:
                mine = [self.at(p, pol)[0] for p in judged]
                if all(m > self.at(p, REFERENCE_POLICY)[0] for m, p in zip(mine, judged)) and np.mean(mine) > best_mean:
                    best, best_mean = pol, float(np.mean(mine))
            except KeyError:
                continue
        return best

    def to_dict(self) -> Dict[str, object]:
        from lmms_ac.law.fit import clean_json

        return clean_json(
            {
                "options": self.options,
                "notes": self.notes,
                "table": self.table().to_dict("records"),
                "goal": self.goal(),
                "best_policy": self.best_policy(),
                "curves": self.frame.to_dict("records"),
            }
        )


def world_recall(
    world: World, policy: str, runs: int, seed: int, tops: Sequence[int] = DEFAULT_TOPS
) -> Dict[str, np.ndarray]:
    """{"anytime"|"final": (k, len(tops))} mean over runs of one policy in one world."""
    spec = POLICY_REGISTRY.get(policy)
    prior = law_prior(world.sources) if spec.uses_prior else None
    rng = np.random.default_rng(seed_sequence(seed, world.name, spec.rng_stream))
    ctx = PolicyContext(world.name, world.points, world.y, runs, rng, prior=prior, A=world.A)
    hits = policy_hits(policy, ctx, world.best, tops, "measured")
    return {"anytime": np.logical_or.accumulate(hits, axis=1).mean(0), "final": hits.mean(0)}


def evaluate_worlds(
    worlds: Sequence[World],
    policies: Sequence[str],
    runs: int,
    seed: int,
    protocol: str,
    tops: Sequence[int] = DEFAULT_TOPS,
) -> pd.DataFrame:
    """The rows of one protocol (see ``Evaluation.frame``); budgets 1..min k over the worlds."""
    n = min(w.k for w in worlds)
    rows = []
    for pol in policies:
        if POLICY_REGISTRY.get(pol).uses_prior and any(not w.sources for w in worlds):
            continue
        per = [world_recall(w, pol, runs, seed, tops) for w in worlds]
        for metric in ("anytime", "final"):
            R = np.stack([p[metric][:n] for p in per])  # (W, n, tops)
            mean = R.mean(0)
            se = R.std(0, ddof=1) / np.sqrt(len(worlds)) if len(worlds) > 1 else np.zeros(R.shape[1:])
            for i, top in enumerate(tops):
                for b in range(n):
                    rows.append(
                        {
                            "protocol": protocol,
                            "policy": pol,
                            "metric": metric,
                            "top": top,
                            "budget": b + 1,
                            "recall": float(mean[b, i]),
                            "se": float(se[b, i]),
                            "worlds": len(worlds),
                        }
                    )
    return pd.DataFrame(rows)


def evaluate(
    data: Optional[Mapping[str, BenchmarkData]] = None,
    protocols: Optional[Sequence[str]] = None,
    policies: Sequence[str] = EVALUATED,
    runs: int = 20,
    seed: int = 0,
    options: Optional[WorldOptions] = None,
) -> Evaluation:
    """Evaluate ``policies`` under ``protocols`` (default: every registered one; those that need a table
    are left out, with a note, when ``data`` is None)."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    opts = options or WorldOptions()
    if opts.worlds < 2:
        raise ValueError(f"worlds must be >= 2 (standard errors need two), got {opts.worlds}")
    for p in policies:
        POLICY_REGISTRY.get(p)
    names = list(protocols) if protocols else protocol_names()
    notes: List[str] = []
    frames = []
    for name in names:
        spec = PROTOCOL_REGISTRY.get(name)
        if spec.needs_table and not data:
            notes.append(f"{name}: needs a table (--example, --wide or --table); left out")
            continue
        worlds = spec.worlds_fn()(data, opts, np.random.default_rng(seed_sequence(seed, name)))
        if not worlds:
            notes.append(f"{name}: no world (e.g. no benchmark's best setting is alone in a family); left out")
            continue
        skipped = [p for p in policies if POLICY_REGISTRY.get(p).uses_prior and any(not w.sources for w in worlds)]
        if skipped:
            notes.append(
                f"{name}: {', '.join(skipped)} left out (a world has no source benchmark to learn a prior from)"
            )
        frames.append(evaluate_worlds(worlds, policies, runs, seed, name))
    if not frames:
        raise ValueError("no protocol could be evaluated: " + "; ".join(notes))
    doc = {
        "protocols": names,
        "policies": list(policies),
        "runs": runs,
        "seed": seed,
        "synthetic": {"worlds_per_shape": opts.worlds, "k": opts.k, "sources": opts.sources, "noise": opts.noise},
        "crediting": "final: the best setting is trained or in the top-n of the untrained by the policy's "
        "prediction after exactly k' trainings; anytime: at some step <= k'",
        "se": "standard deviation over worlds / sqrt(worlds)",
    }
    return Evaluation(pd.concat(frames, ignore_index=True), doc, notes)


def expected_recall(
    points: np.ndarray, policy: str, n_trained: int, worlds: int = 100, runs: int = 10, seed: int = 0
) -> Dict[str, float]:
    """Final Recall@3 of ``policy`` and of region on random laws over these candidates' own (A, C) points
    (synthetic worlds, law related to 4 synthetic sources), at the next budget and at k' = 4."""
    opts = WorldOptions(worlds=worlds, k=len(points))
    rng = np.random.default_rng(seed_sequence(seed, "expected"))
    ws = [synthetic_world("uniform", "related", rng, opts, points=points, name=f"own#{i}") for i in range(worlds)]
    out: Dict[str, float] = {"worlds": float(worlds)}
    budgets = sorted({min(n_trained + 1, len(points)), min(GOAL_BUDGET, len(points))})
    for pol in dict.fromkeys([policy, "region"]):
        per = np.stack([world_recall(w, pol, runs, seed, (GOAL_TOP,))["final"][:, 0] for w in ws])
        for b in budgets:
            out[f"{pol} final_recall@{GOAL_TOP} k'={b}"] = float(per[:, b - 1].mean())
    return out
