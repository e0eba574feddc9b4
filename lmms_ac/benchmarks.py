"""The benchmarks of both studies: ONE registry that every other part reads.

A :class:`Benchmark` says which lmms-eval task runs it, its headline metric, the names the papers
use, its group in the law paper (``vision``/``ocr``) and which study uses it. Readers:

* the robustness generator (``lmms_ac.robustness.generation``): one variant set per benchmark task;
* ``collect`` / the clean-score view (``lmms_ac.results.table``): :func:`primary_metric`,
  :func:`sources` (where a law benchmark name is found in lmms-eval results);
* the law (``lmms_ac.law.data``): :func:`law_groups`, :func:`canonical_law_name`,
  :func:`law_benchmarks` (the published example's columns);
* the HTML report's groups (``lmms_ac.report.sections``).

Adding a benchmark is one :func:`register_benchmark` call (one row of ``_TABLE`` below for a
benchmark of the project; a plugin calls it from its module, see robustness/ADDING_A_PROBE.md).
Cheap to import: no pandas, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from lmms_ac.registry import Registry

#: the law paper's benchmark groups, in its order
GROUPS: Tuple[str, ...] = ("vision", "ocr")
#: the studies a benchmark can belong to (generated tag ``lmms_ac_robustness_<study>``)
STUDIES: Tuple[str, ...] = ("law", "perception")
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark.

    ``key``: short name (``lmms-ac tasks --benchmark``); ``task``: the ONE lmms-eval task the
    robustness variants are built on (a task, never a group); ``title``: the papers' name;
    ``studies``: which studies use it; ``note``: why this task. ``metric``: the headline metric of
    ``task`` (None: its only metric). ``law_name``: the column name in the law's published data
    (None: not a law benchmark); ``sources``: where that name is found in lmms-eval results,
    candidate (task, metric) pairs, first found wins; ``aliases``: other names a user may give
    (paper spellings; matched ignoring case and punctuation); ``group``: ``vision``/``ocr``.
    """

    key: str
    task: str
    title: str
    studies: Tuple[str, ...] = ()
    note: str = ""
    metric: Optional[str] = None
    law_name: Optional[str] = None
    sources: Tuple[Tuple[str, str], ...] = ()
    aliases: Tuple[str, ...] = ()
    group: Optional[str] = None

    def all_sources(self) -> List[Tuple[str, str]]:
        """(task, metric) candidates in order: the declared sources, then (task, metric)."""
        out = list(self.sources)
        if self.metric and (self.task, self.metric) not in out:
            out.append((self.task, self.metric))
        return out


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def register_benchmark(
    name: str,
    lmms_eval_task: Optional[str] = None,
    *,
    title: Optional[str] = None,
    studies: Sequence[str] = (),
    note: str = "",
    metric: Optional[str] = None,
    law_name: Optional[str] = None,
    sources: Sequence[Tuple[str, str]] = (),
    aliases: Sequence[str] = (),
    group: Optional[str] = None,
    overwrite: bool = False,
) -> Benchmark:
    """Register a benchmark (``lmms_eval_task`` defaults to ``name``); see :class:`Benchmark`.

    Every reader (robustness variants, ``collect``, the law's groups) sees it from then on."""
    task = lmms_eval_task or name
    if not _TASK_NAME.match(task):
        raise ValueError(f"lmms-eval task name {task!r} must be letters, digits, '_' or '-' (no dots)")
    if group is not None and group not in GROUPS:
        raise ValueError(f"benchmark {name!r}: group {group!r} is not one of {', '.join(GROUPS)}")
    existing = [b for b in all_benchmarks() if b.task == task and b.key != name]
    if existing and not overwrite:
        raise ValueError(f"task {task!r} is already the benchmark {existing[0].key!r}")
    bench = Benchmark(
        name,
        task,
        title or name,
        tuple(studies),
        note,
        metric,
        law_name,
        tuple(tuple(s) for s in sources),
        tuple(aliases),
        group,
    )  # type: ignore[misc]
    if name in BENCHMARKS and BENCHMARKS.get(name) == bench:
        return bench
    BENCHMARKS.register(name, bench, overwrite=overwrite)
    return bench


def all_benchmarks() -> List[Benchmark]:
    """Every registered benchmark, sorted by key (the order of generated tasks)."""
    return [BENCHMARKS.get(k) for k in BENCHMARKS.names()]


def _registered() -> List[Benchmark]:
    """Every registered benchmark in registration order (the papers' order, for the law's views)."""
    return list(BENCHMARKS.snapshot().values())


def benchmark(name: str) -> Benchmark:
    """A benchmark by short key or by lmms-eval task name (did-you-mean error otherwise)."""
    for b in all_benchmarks():
        if b.task == name:
            return b
    return BENCHMARKS.get(name)


def base_tasks() -> List[str]:
    """The lmms-eval task names of all registered benchmarks."""
    return [b.task for b in all_benchmarks()]


# ---------------------------------------------------------------------------------- views
def law_benchmarks() -> List[str]:
    """The law's benchmark names (``law_name``), in registration order."""
    return [b.law_name for b in _registered() if b.law_name]


def law_groups() -> Dict[str, List[str]]:
    """``{group: [law names]}`` of the law paper (vision first, then OCR)."""
    out: Dict[str, List[str]] = {g: [] for g in GROUPS}
    for b in _registered():
        if b.group and b.law_name:
            out[b.group].append(b.law_name)
    return out


def sources(name: str) -> List[Tuple[str, str]]:
    """Candidate (lmms-eval task, metric) pairs of a law benchmark name (empty if unknown)."""
    for b in _registered():
        if b.law_name == name:
            return b.all_sources()
    return []


def law_sources() -> Dict[str, List[Tuple[str, str]]]:
    """``{law name: sources}`` of every law benchmark."""
    return {b.law_name: b.all_sources() for b in _registered() if b.law_name}


def primary_metric(task: str) -> Optional[str]:
    """The headline metric of an lmms-eval task that reports several (None if not known)."""
    for b in _registered():
        if b.task == task and b.metric:
            return b.metric
    for b in _registered():
        for t, m in b.sources:
            if t == task:
                return m
    return None


def _squash(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


_ALIASES: Dict[str, object] = {"version": None, "index": {}}


def canonical_law_name(name: str) -> Optional[str]:
    """The law name of a benchmark given its law name or any alias (None if unknown); matched after
    lower-casing and dropping everything but letters and digits (so "SEED-IMG", "OK-VQA" match)."""
    if _ALIASES["version"] != BENCHMARKS.version:
        _ALIASES["index"] = {
            _squash(a): b.law_name for b in _registered() if b.law_name for a in (b.law_name,) + b.aliases
        }
        _ALIASES["version"] = BENCHMARKS.version
    return _ALIASES["index"].get(_squash(name))  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------- the table
# lmms-eval 0.7.3 tasks verified to be single tasks in the installed index (test_robustness_tasks);
# one dict of register_benchmark's arguments per benchmark, in the papers' order
_TABLE: List[Dict[str, object]] = [
    dict(
        name="mmbench",
        lmms_eval_task="mmbench_en_dev",
        title="MMBench",
        studies=("law",),
        note="group `mmbench` -> English dev split",
        metric="gpt_eval_score",
        law_name="mmbench_en",
        sources=[("mmbench_en", "gpt_eval_score"), ("mmbench_en_dev", "gpt_eval_score")],
        aliases=["MMBench", "MMBench-EN"],
        group="vision",
    ),
    dict(
        name="mme",
        lmms_eval_task="mme",
        title="MME",
        studies=("law", "perception"),
        metric="mme_perception_score",
        law_name="mme",
        sources=[("mme", "mme_perception_score")],
        aliases=["MME", "MME-P", "MME perception"],
        group="vision",
    ),
    dict(
        name="mmmu",
        lmms_eval_task="mmmu_val",
        title="MMMU",
        studies=("law",),
        note="group `mmmu` -> validation split",
        metric="mmmu_acc",
        law_name="mmmu_val",
        sources=[("mmmu_val", "mmmu_acc")],
        aliases=["MMMU", "MMMU-val"],
        group="ocr",
    ),
    dict(
        name="okvqa",
        lmms_eval_task="ok_vqa_val2014",
        title="OKVQA",
        studies=("law",),
        note="group `ok_vqa` -> val2014",
        law_name="ok_vqa",
        sources=[("ok_vqa", "exact_match"), ("ok_vqa_val2014", "exact_match")],
        aliases=["OKVQA", "OK-VQA"],
        group="vision",
    ),
    dict(
        name="textvqa",
        lmms_eval_task="textvqa_val",
        title="TextVQA",
        studies=("law",),
        law_name="textvqa_val",
        sources=[("textvqa_val", "exact_match")],
        aliases=["TextVQA", "TextVQA-val"],
        group="ocr",
    ),
    dict(
        name="vizwiz",
        lmms_eval_task="vizwiz_vqa_val",
        title="VizWiz",
        studies=("law",),
        law_name="vizwiz_vqa_val",
        sources=[("vizwiz_vqa_val", "exact_match")],
        aliases=["VizWiz", "VizWiz-VQA"],
        group="ocr",
    ),
    dict(
        name="scienceqa_img",
        lmms_eval_task="scienceqa_img",
        title="ScienceQA-IMG",
        studies=("law", "perception"),
        law_name="scienceqa_img",
        sources=[("scienceqa_img", "exact_match")],
        aliases=["ScienceQA", "ScienceQA-IMG", "SQA-IMG", "SQA"],
        group="ocr",
    ),
    dict(
        name="seed_img",
        lmms_eval_task="seed",
        title="SEED-IMG",
        studies=("law",),
        note="lmms-ac task tasks/seed (image questions of SEED-Bench)",
        law_name="seed_image",
        sources=[("seedbench", "seed_image"), ("seed_image", "seed_image")],
        aliases=["SEED", "SEED-IMG", "SEED-Bench", "SEEDBench-IMG"],
        group="vision",
    ),
    dict(name="mmvp", lmms_eval_task="mmvp", title="MMVP", studies=("perception",)),
    dict(
        name="qbench",
        lmms_eval_task="qbench_dev",
        title="Q-Bench",
        studies=("perception",),
        note="Q-Bench (A1) dev split",
    ),
    dict(name="mmstar", lmms_eval_task="mmstar", title="MMStar", studies=("perception",)),
    dict(name="mmvet", lmms_eval_task="mmvet", title="MM-Vet", studies=("perception",), note="GPT-judged"),
    dict(
        name="llava_w", lmms_eval_task="llava_in_the_wild", title="LLaVA-W", studies=("perception",), note="GPT-judged"
    ),
    dict(
        name="mathvista",
        lmms_eval_task="mathvista_testmini_format",
        title="MathVista",
        studies=("perception",),
        note="group `mathvista_testmini` -> its format-prompt subtask (the usual testmini number)",
    ),
    dict(name="chartqa", lmms_eval_task="chartqa", title="ChartQA", studies=("perception",)),
    dict(name="ai2d", lmms_eval_task="ai2d", title="AI2D", studies=("perception",)),
]
for _entry in _TABLE:
    register_benchmark(**_entry)  # type: ignore[arg-type]

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "GROUPS",
    "STUDIES",
    "register_benchmark",
    "all_benchmarks",
    "benchmark",
    "base_tasks",
    "law_benchmarks",
    "law_groups",
    "sources",
    "law_sources",
    "primary_metric",
    "canonical_law_name",
]
