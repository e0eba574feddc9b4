"""Planning: a study -> units (one result each) -> jobs (what one process runs).

A **unit** is one result: an lmms-eval task on one model, or one score (A, C, C_ocr) of one entry.
Its id is a hash of everything that changes that result (checkpoint, model arguments, task,
perturbation and seed (both in the task name), lmms-eval options that change outputs, score settings,
the versions of lmms-eval, lmms-ac and transformers) and of nothing else, so editing one model's
arguments changes only that model's ids, and adding a benchmark adds units without touching others.

A **job** bundles the pending units that share a loaded model: all pending lmms-eval tasks of one
model (or chunks of ``lmms_eval.tasks_per_job``), the A score of one stage-1 checkpoint, the C and
C_ocr scores of one representation. Its id hashes its units' ids, so the same pending work gets the
same job id on every run (and its attempt count and logs carry over).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from lmms_ac.io import config_hash
from lmms_ac.study.spec import ModelSpec, Study, StudyError, did_you_mean, model_probe_labels

LMMS_EVAL_MODEL = "lmms_ac_llava"
ID_PACKAGES = ("lmms-eval", "lmms-ac", "transformers")


@dataclass(frozen=True)
class Unit:
    unit_id: str
    kind: str  # "eval" | "score"
    entry: str  # model / candidate name
    variant: str
    column: str  # status column: benchmark, "<benchmark>/<probe>", or the score name
    task: Optional[str] = None  # lmms-eval task (eval units)
    score: Optional[str] = None  # A | C | C_ocr (score units)


@dataclass
class Job:
    job_id: str
    kind: str  # "eval" | "score-a" | "score-c"
    entry: str
    units: List[Unit]
    argv: List[str]
    env: Dict[str, str] = field(default_factory=dict)
    gpus: int = 1

    def to_dict(self, job_dir: Path) -> Dict[str, Any]:
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "entry": self.entry,
            "argv": self.argv,
            "env": self.env,
            "gpus": self.gpus,
            "job_dir": str(job_dir),
            "units": [u.__dict__ for u in self.units],
        }


@dataclass
class Plan:
    study: Study
    units: List[Unit]
    notes: List[str] = field(default_factory=list)
    families: List[str] = field(default_factory=list)  # opt-in robustness families the tasks need

    def unit(self, unit_id: str) -> Unit:
        return next(u for u in self.units if u.unit_id == unit_id)


def package_versions(names: Sequence[str] = ID_PACKAGES) -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def bin_path(name: str) -> str:
    """A console script of this environment (the same one on every node of a shared-filesystem cluster)."""
    return str(Path(sys.executable).parent / name)


# ------------------------------------------------------------------------------------- probes
@dataclass(frozen=True)
class ProbeTask:
    """One generated robustness task of the study's probes."""

    task: str
    column: str  # status column "<benchmark>/<probe>"
    labels: Tuple[str, ...]  # the study probes (their perturbation: or tag:) that select it
    perturbation: Any  # the catalogue perturbation it applies (robustness.base.Perturbation)


def expand_probes(study: Study) -> Tuple[Dict[str, List[ProbeTask]], List[str], List[str]]:
    """benchmark -> its probe tasks (each with the probe names that select it, for a model's ``probes:`` list),
    the opt-in families needed, notes. Uses the catalogue (``lmms_ac.robustness.tasks.task_specs``, pure, no
    TaskManager)."""
    if not study.probes:
        return {}, [], []
    from lmms_ac.robustness import tasks as T

    specs = T.task_specs(None, [T.VARIANTS.get(n) for n in T.VARIANTS.names()])
    bases = {s.base for s in specs}
    forms = sorted(
        {s.perturbation.with_seed(0).to_string() for s in specs} | {T.VARIANTS.get(n).probe for n in T.VARIANTS.names()}
    )
    tags = sorted({t for s in specs for t in s.tags})
    by_bench: Dict[str, Dict[str, ProbeTask]] = {}
    families: List[str] = []
    notes: List[str] = []
    errors: List[str] = []
    for i, p in enumerate(study.probes):
        benches = p.benchmarks or study.benchmarks
        uncovered = [b for b in benches if b not in bases]
        if uncovered and p.benchmarks:
            errors.append(
                f"probes[{i}].benchmarks: the catalogue has no robustness variants of {', '.join(uncovered)} "
                f"(benchmarks with variants: {', '.join(sorted(bases))})"
            )
        elif uncovered:
            notes.append(f"probes[{i}] skips {', '.join(uncovered)} (no robustness variants in the catalogue)")
        if p.perturbation:
            want = p.perturbation
            chosen = [
                s
                for s in specs
                if s.perturbation.with_seed(0).to_string() == want or (T.VARIANTS.get(s.family).probe == want)
            ]
            if not chosen:
                errors.append(
                    f"probes[{i}].perturbation: unknown {want!r}{did_you_mean(want, forms)} "
                    "(`lmms-ac tasks --benchmark mme` lists the forms)"
                )
                continue
        else:
            chosen = [s for s in specs if p.tag in s.tags]
            if not chosen:
                errors.append(
                    f"probes[{i}].tag: no generated task has the tag {p.tag!r}{did_you_mean(p.tag, tags)} "
                    "(`lmms-ac tasks --tags` lists them)"
                )
                continue
        picked = [s for s in chosen if s.base in benches and (p.seeds is None or s.perturbation.seed < p.seeds)]
        if not picked:
            notes.append(f"probes[{i}] selects no task on the study's benchmarks")
        label = p.perturbation or p.tag
        for s in picked:
            tasks = by_bench.setdefault(s.base, {})
            known = tasks.get(s.name)
            if known is None:
                column = f"{s.base}/{s.perturbation.with_seed(0).to_string() if p.perturbation else label}"
                tasks[s.name] = ProbeTask(s.name, column, (label,), s.perturbation)
            elif label not in known.labels:
                tasks[s.name] = dataclasses.replace(known, labels=known.labels + (label,))
            fam = T.VARIANTS.get(s.family)
            if not fam.default and fam.name not in families:
                families.append(fam.name)
    if errors:
        raise StudyError("study probes:\n  - " + "\n  - ".join(errors))
    return {b: list(tasks.values()) for b, tasks in by_bench.items()}, families, notes


# ------------------------------------------------------------------------------------- tiled checkpoints
#: llava-hf model types with tiled ("anyres") image input: ``lmms_ac.vlm.next_hf.TILED_HF_TYPES``, written out
#: here because importing it loads torch, and planning a study does not
TILED_MODEL_TYPES = ("llava_next", "llava_onevision")


def tiled_checkpoint(study: Study, m: ModelSpec) -> Optional[str]:
    """Why model ``m``'s checkpoint has tiled input (LLaVA-NeXT/OneVision: base view + tiles), read from its local
    ``config.json``; None when it has not, or when there is no local config to read (a hub id: the job's load
    refuses what does not fit)."""
    import json

    folder = Path(study.path(m.pretrained))
    if not folder.is_absolute():  # a hub id
        return None
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing (preflight reports it) or damaged (the loader reports it)
        return None
    if not isinstance(config, dict):
        return None
    mtype = config.get("model_type")
    if mtype in TILED_MODEL_TYPES:
        return f"config.json model_type {mtype}"
    aspect = str(config.get("image_aspect_ratio") or "")
    return f"config.json image_aspect_ratio {aspect}" if aspect.startswith("anyres") else None


def refused_on_tiles(p: Any) -> bool:
    """``lmms_ac_llava``'s rule (``lmms_ac.perturb_bridge``): on tiled input an image- or token-stage perturbation
    runs only when its class is defined there (``on_tiles``: patch shuffle, token permutation)."""
    return p.stage in ("image", "tokens") and not p.on_tiles


def tiled_refusals(study: Study, m: ModelSpec, tasks: Sequence[ProbeTask]) -> List[str]:
    """The probes of model ``m`` (its tasks and its ``perturbation`` model argument) that ``lmms_ac_llava`` would
    refuse when the model loads because its checkpoint is tiled: each would fail the model's whole job."""
    refused = [t for t in tasks if refused_on_tiles(t.perturbation)]
    arg = m.model_args.get("perturbation")
    arg_refused = None
    if arg:
        from lmms_ac.robustness.grammar import parse_perturbation

        try:
            arg_refused = parse_perturbation(str(arg))
        except ValueError:  # the model's load reports an unknown perturbation with its own message
            arg_refused = None
        if arg_refused is not None and not refused_on_tiles(arg_refused):
            arg_refused = None
    if not refused and arg_refused is None:
        return []
    why = tiled_checkpoint(study, m)
    if why is None:
        return []
    rule = (
        f"its checkpoint has tiled input ({why}: LLaVA-NeXT/OneVision base view + tiles), on which lmms_ac_llava "
        "refuses, when the model loads, an image- or token-stage probe whose class does not say how it acts on the "
        "views (on_tiles); the other probes run"
    )
    out: List[str] = []
    if refused:
        bad = list(dict.fromkeys(label for t in refused for label in t.labels))
        ok = [label for label in model_probe_labels(study, m) if label not in bad]
        fix = f"probes: [{', '.join(ok)}]" if ok else "probes: false"
        out.append(f"models[{m.name}].probes: {', '.join(bad)} would run on this model, but {rule}; give it `{fix}`")
    if arg_refused is not None:
        out.append(
            f"models[{m.name}].model_args.perturbation: {arg_refused} ({arg_refused.stage} stage) is refused: {rule}"
        )
    return out


# ------------------------------------------------------------------------------------- units
def _vision(study: Study, spec: str) -> str:
    """A representation spec with a relative local directory made absolute (``clip:ckpts/tower``)."""
    fam, sep, rest = spec.partition(":")
    if not sep:
        return spec
    base, q, query = rest.partition("?")
    local = Path(study.root) / base
    if not Path(base).is_absolute() and local.exists():
        base = str(local.resolve())
    return f"{fam}:{base}{q}{query}"


def model_identity(study: Study, m: ModelSpec) -> Dict[str, Any]:
    args = {k: m.model_args[k] for k in sorted(m.model_args)}
    return {
        "pretrained": study.path(m.pretrained),
        "model_base": study.path(m.model_base) if m.model_base else None,
        "vision_tower": _vision(study, m.vision_tower) if m.vision_tower else None,
        "model_args": args,
        "variant": m.variant_name,
    }


def _eval_settings(study: Study) -> Dict[str, Any]:
    e = study.lmms_eval
    return {"limit": e.limit, "num_fewshot": e.num_fewshot, "extra_args": list(e.extra_args)}


def make_plan(study: Study, versions: Optional[Dict[str, Optional[str]]] = None) -> Plan:
    """Every unit of the study (done or not), in a stable order."""
    versions = package_versions() if versions is None else versions
    probes, families, notes = expand_probes(study)
    units: List[Unit] = []
    for e in list(study.models) + list(study.candidates):
        for key in ("pretrained", "stage1", "model_base"):
            value = getattr(e, key, None)
            if value and not Path(study.path(value)).is_absolute():
                notes.append(f"{e.name}.{key} {value!r} is not a folder next to the study file: loaded as a hub id")
    for kind, entries in (("models", study.models), ("candidates", study.candidates)):
        for e in entries:  # a variant is also a word of the score commands' argv and a column of every table
            v = e.variant_name
            if v.startswith("-") or any(ord(c) < 32 or ord(c) == 127 for c in v) or v != v.strip():
                raise StudyError(
                    f"{kind}[{e.name}].variant: {v!r} starts with '-', has a line break or control character, or "
                    "leading/trailing spaces; a command line would misread it: rename the variant"
                )
    tiled_problems: List[str] = []
    for m in study.models:
        ident = model_identity(study, m)
        lmms_eval_model_args(study, m)  # every value is checked before any id is made
        benches = m.benchmarks or study.benchmarks
        chosen = model_probe_labels(study, m)
        mine = [t for b in benches for t in probes.get(b, []) if set(t.labels) & set(chosen)]
        if not isinstance(m.probes, bool):
            for name in chosen:
                if not any(name in t.labels for t in mine):
                    notes.append(f"models[{m.name}].probes: {name!r} selects no task on this model's benchmarks")
        tiled_problems += tiled_refusals(study, m, mine)
        tasks: List[Tuple[str, str]] = [(b, b) for b in benches] + [(t.task, t.column) for t in mine]
        for task, column in tasks:
            uid = config_hash(
                {"kind": "eval", "model": ident, "task": task, "eval": _eval_settings(study), "versions": versions}
            )
            units.append(Unit(uid, "eval", m.name, m.variant_name, column, task=task))
    if tiled_problems:
        raise StudyError("the study cannot run as written:\n  - " + "\n  - ".join(tiled_problems))
    sc = study.scores
    score_versions = {k: v for k, v in versions.items() if k != "lmms-eval"}  # scores do not run lmms-eval
    for e in list(study.models) + list(study.candidates):
        if sc.A is not None and e.stage1:
            a = sc.A
            cfg = {
                "kind": "score",
                "score": "A",
                "stage1": study.path(e.stage1),
                "model_base": study.path(e.model_base) if e.model_base else None,
                "vision_tower": _vision(study, e.vision_tower) if e.vision_tower else None,
                "captions": Path(a.captions).name,
                "n": a.n,
                "seed": a.seed,
                "method": a.method,
                "reference": [study.path(r) for r in a.reference],
                "dtype": a.dtype,
                "variant": e.variant_name,
                "versions": score_versions,
            }
            name = "A" if a.method == "caption_ll" else "A_embed"
            units.append(Unit(config_hash(cfg), "score", e.name, e.variant_name, name, score=name))
        if e.vision:
            vision = _vision(study, e.vision)
            if sc.C is not None:
                c = sc.C
                cfg = {
                    "kind": "score",
                    "score": "C",
                    "vision": vision,
                    "spair": Path(c.spair).name,
                    "split": c.split,
                    "limit": c.limit,
                    "alpha": c.alpha,
                    "method": c.method,
                    "variant": e.variant_name,
                    "versions": score_versions,
                }
                units.append(Unit(config_hash(cfg), "score", e.name, e.variant_name, "C", score="C"))
            if sc.C_ocr is not None:
                method = sc.C.method if sc.C else "argmax"
                alpha = sc.C.alpha if sc.C else 0.1
                cfg = {
                    "kind": "score",
                    "score": "C_ocr",
                    "vision": vision,
                    "n": sc.C_ocr.n,
                    "seed": sc.C_ocr.seed,
                    "alpha": alpha,
                    "method": method,
                    "variant": e.variant_name,
                    "versions": score_versions,
                }
                units.append(Unit(config_hash(cfg), "score", e.name, e.variant_name, "C_ocr", score="C_ocr"))
    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        dup = next(u for u in units if ids.count(u.unit_id) > 1)
        raise StudyError(
            f"two entries produce the same result ({dup.column} of {dup.variant!r}): give them "
            "different checkpoints, arguments or variant names"
        )
    return Plan(study, units, notes, families)


# ------------------------------------------------------------------------------------- preflight
def missing_checkpoints(study: Study) -> List[str]:
    """Checkpoint and representation paths of the study that are local (absolute, or resolved next to the study
    file) but do not exist: each would only fail when its job runs. Hub ids (``org/name``) are not checked."""
    out: List[str] = []

    def check(where: str, value: Optional[str], vision: bool = False) -> None:
        if not value:
            return
        if vision:
            fam, sep, rest = _vision(study, value).partition(":")
            target = rest.partition("?")[0] if sep else ""
            if fam == "concat":  # concat:<spec>+<spec>: each part is a spec of its own
                for i, part in enumerate(rest.split("+")):
                    check(f"{where} (part {i + 1})", part, vision=True)
                return
        else:
            target = study.path(value)
        if target and Path(target).is_absolute() and not Path(target).exists():
            shown = repr(value) if target == value else f"{value!r} ({target})"
            out.append(f"{where}: {shown} does not exist; fix the path (a hub id is written org/name)")

    for kind, entries in (("models", study.models), ("candidates", study.candidates)):
        for e in entries:
            for key in ("pretrained", "stage1", "model_base"):
                check(f"{kind}[{e.name}].{key}", getattr(e, key, None))
            check(f"{kind}[{e.name}].vision_tower", e.vision_tower, vision=True)
            check(f"{kind}[{e.name}].vision", e.vision, vision=True)
    if study.scores.A is not None:
        for i, r in enumerate(study.scores.A.reference):
            check(f"scores.A.reference[{i}]", r)
    return out


def include_paths(study: Study) -> List[str]:
    """The ``--include_path`` folders of ``lmms_eval.extra_args`` (task YAMLs of the user's own)."""
    args, out = list(study.lmms_eval.extra_args), []
    for i, a in enumerate(args):
        if a == "--include_path" and i + 1 < len(args):
            out.append(study.local_path(args[i + 1]))
        elif a.startswith("--include_path="):
            out.append(study.local_path(a.split("=", 1)[1]))
    return out


def unknown_benchmarks(study: Study, task_names: Optional[Sequence[str]] = None) -> List[str]:
    """The study's benchmarks that lmms-eval does not know, each with "did you mean". The benchmarks of lmms-ac's
    registry need no look-up; for any other name the lmms-eval task index is built once (as the lmms-eval command
    builds it, ``--include_path`` of ``extra_args`` included), unless ``task_names`` is given."""
    from lmms_ac.benchmarks import base_tasks

    known = set(base_tasks())
    others = [b for b in study.benchmarks if b not in known]
    if not others:
        return []
    if task_names is None:
        from lmms_ac import plugin

        folders = include_paths(study)
        try:
            task_names = list(plugin.task_manager(folders or None).all_tasks)
        except AssertionError:  # a check's failure (the test suite's guard) is not a damaged task file
            raise
        except Exception as err:  # noqa: BLE001 - lmms-eval reads every task YAML, a damaged one raises anything
            raise StudyError(
                f"cannot build lmms-eval's task list to check the benchmarks {', '.join(others)} "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                + (
                    f"check the task YAMLs under --include_path {', '.join(folders)}"
                    if folders
                    else "run lmms-ac doctor"
                )
            ) from None
    names = set(task_names)
    return [
        f"benchmarks: {b!r} is not an lmms-eval task{did_you_mean(b, sorted(names | known))} "
        "(`lmms-eval --tasks list` lists them; a task of your own needs --include_path in lmms_eval.extra_args)"
        for b in others
        if b not in names
    ]


def preflight(study: Study, task_names: Optional[Sequence[str]] = None) -> None:
    """What ``study plan``/``study run`` check before any job: local checkpoints exist and every benchmark is a task
    lmms-eval knows. Raises ``StudyError`` listing every problem."""
    problems = missing_checkpoints(study) + unknown_benchmarks(study, task_names)
    if problems:
        raise StudyError("the study cannot run as written:\n  - " + "\n  - ".join(problems))


# ------------------------------------------------------------------------------------- jobs
def _job_env(study: Study, families: Sequence[str]) -> Dict[str, str]:
    env = {**study.env, **study.lmms_eval.env}
    if families:
        env["LMMS_AC_VARIANTS"] = ",".join(["default", *families])
    return env


def _gpus_per_job(study: Study) -> int:
    ex = study.executor
    if ex.type == "slurm":
        return ex.slurm.gpus_per_job
    return 0 if ex.gpus == "none" else ex.gpus_per_job


# ------------------------------------------------------------------------------------- model args
#: what lmms-eval's ``--model_args`` parser (``lmms_eval.utils.simple_parse_args_string``) reads as syntax:
#: ',' separates arguments, quotes and brackets group them (a comma inside does not split), '=' ends a key
MODEL_ARGS_SYNTAX = {
    ",": "','",
    "=": "'='",
    "'": "a quote",
    '"': "a quote",
    "{": "'{'",
    "}": "'}'",
    "[": "'['",
    "]": "']'",
}
MODEL_ARG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: arguments whose value may hold '=': a representation spec's options (``clip:dir?layer=-2``); lmms-eval cuts an
#: argument at its first '=', so the rest of the value arrives whole
EQUALS_ALLOWED = ("vision_tower",)


def check_model_arg(where: str, key: str, value: str, *, path: bool = False) -> None:
    """Raise ``StudyError`` when ``key=value`` would not reach lmms-eval as one argument with exactly this value
    (a ',' in a variant name or a checkpoint folder would otherwise add arguments, e.g. ``trust_remote_code=on``)."""
    if not MODEL_ARG_KEY.match(key):
        raise StudyError(f"{where}: {key!r} is not a model argument name (letters, digits and '_'); rename the key")
    bad = [c for c in value if c in MODEL_ARGS_SYNTAX and not (c == "=" and key in EQUALS_ALLOWED)]
    control = [c for c in value if ord(c) < 32 or ord(c) == 127]
    if not bad and not control and value == value.strip():
        return
    what = (
        " and ".join(dict.fromkeys(MODEL_ARGS_SYNTAX[c] for c in bad))
        if bad
        else ("a line break or control character" if control else "leading or trailing spaces")
    )
    fix = (
        "rename the folder, or point to it through a link whose path has none of them (ln -s)"
        if path
        else "use a value without them"
    )
    raise StudyError(
        f"{where}: {value!r} contains {what}, which lmms-eval's --model_args reads as syntax (',' separates "
        f"arguments, quotes and brackets group them), so {key} would not arrive as written; {fix}"
    )


def lmms_eval_model_args(study: Study, m: ModelSpec) -> List[Tuple[str, str]]:
    """The (argument, value) pairs of model ``m``'s ``--model_args``, each checked with ``check_model_arg``, and
    checked again as a whole: the joined string parses back (by lmms-eval's rule) to exactly these pairs, so what
    lmms-eval sees is what the plan and the done files record. lmms-eval 0.7.3 has no structured alternative that
    keeps its results layout (a ``--config`` YAML mapping reaches the model but names no model in the results
    folder), hence the checks."""
    from lmms_ac.model_args import split_arg_string

    ident = model_identity(study, m)
    where = f"models[{m.name}]"
    items: List[Tuple[str, str, str, bool]] = [(f"{where}.pretrained", "pretrained", ident["pretrained"], True)]
    if ident["model_base"]:
        items.append((f"{where}.model_base", "model_base", ident["model_base"], True))
    if ident["vision_tower"]:
        items.append((f"{where}.vision_tower", "vision_tower", ident["vision_tower"], True))
    items += [(f"{where}.model_args.{k}", k, str(v), False) for k, v in ident["model_args"].items()]
    items.append((f"{where}.variant", "variant", m.variant_name, False))
    for loc, key, value, is_path in items:
        check_model_arg(loc, key, value, path=is_path)
    pairs = [(key, value) for _, key, value, _ in items]
    text = ",".join(f"{k}={v}" for k, v in pairs)
    try:
        parsed = split_arg_string(text)
    except ValueError as err:
        raise StudyError(f"{where}: {err}") from None
    if parsed != dict(pairs):
        raise StudyError(f"{where}: its model arguments do not reach lmms-eval as written ({text!r}); check each value")
    return pairs


def eval_argv(study: Study, m: ModelSpec, tasks: Sequence[str], job_dir: Path) -> List[str]:
    margs = [f"{k}={v}" for k, v in lmms_eval_model_args(study, m)]
    e = study.lmms_eval
    gpus = _gpus_per_job(study)
    if study.executor.accelerate:  # data parallel over the job's GPUs
        head = [bin_path("accelerate"), "launch", "--num_processes", str(max(1, gpus)), "-m", "lmms_eval"]
    else:
        head = [bin_path("lmms-eval")]
    argv = head + [
        "--model",
        LMMS_EVAL_MODEL,
        "--model_args",
        ",".join(margs),
        "--tasks",
        ",".join(tasks),
        "--batch_size",
        str(e.batch_size),
        "--output_path",
        str(job_dir / "lmms_eval"),
        "--verbosity",
        e.verbosity,
    ]
    if e.log_samples:
        argv.append("--log_samples")
    if e.limit is not None:
        argv += ["--limit", str(int(e.limit) if float(e.limit).is_integer() else e.limit)]
    if e.num_fewshot is not None:
        argv += ["--num_fewshot", str(e.num_fewshot)]
    return argv + list(e.extra_args)


def score_a_argv(study: Study, entry: Any, job_dir: Path) -> List[str]:
    a = study.scores.A
    argv = [
        bin_path("lmms-ac"),
        "score-a",
        "--pretrained",
        study.path(entry.stage1),
        "--captions",
        study.local_path(a.captions),
        "--images",
        study.local_path(a.images),
        "--n",
        str(a.n),
        "--seed",
        str(a.seed),
        "--method",
        a.method,
        "--batch-size",
        str(a.batch_size),
        "--dtype",
        a.dtype,
        "--device",
        study.scores.device,
        "--variant",
        entry.variant_name,
        "--out",
        str(job_dir / "scores.csv"),
    ]
    if entry.model_base:
        argv += ["--model-base", study.path(entry.model_base)]
    if entry.vision_tower:
        argv += ["--vision-tower", _vision(study, entry.vision_tower)]
    for r in a.reference:
        argv += ["--reference", study.path(r)]
    return argv


def score_c_argv(study: Study, entry: Any, job_dir: Path, scores: Sequence[str]) -> List[str]:
    sc = study.scores
    argv = [
        bin_path("lmms-ac"),
        "score-c",
        "--vision",
        _vision(study, entry.vision),
        "--variant",
        entry.variant_name,
        "--out",
        str(job_dir / "scores.csv"),
    ]
    if sc.device != "auto":
        argv += ["--device", sc.device]
    if "C" in scores:
        c = sc.C
        argv += [
            "--spair",
            study.local_path(c.spair),
            "--split",
            c.split,
            "--alpha",
            str(c.alpha),
            "--method",
            c.method,
            "--batch-size",
            str(c.batch_size),
        ]
        if c.limit is not None:
            argv += ["--limit", str(c.limit)]
    elif sc.C is not None:
        argv += ["--alpha", str(sc.C.alpha), "--method", sc.C.method]
    if "C_ocr" in scores:
        argv += ["--ocr", "--ocr-n", str(sc.C_ocr.n), "--ocr-seed", str(sc.C_ocr.seed)]
    return argv


def make_jobs(plan: Plan, pending: Sequence[Unit], jobs_root: Path) -> List[Job]:
    """Jobs for the ``pending`` units (stable ids; see module doc)."""
    study = plan.study
    models = {m.name: m for m in study.models}
    entries = {e.name: e for e in list(study.models) + list(study.candidates)}
    env = _job_env(study, plan.families)
    gpus = _gpus_per_job(study)
    jobs: List[Job] = []
    groups: Dict[Tuple[str, str], List[Unit]] = {}
    for u in pending:
        kind = "eval" if u.kind == "eval" else ("score-a" if u.score in ("A", "A_embed") else "score-c")
        groups.setdefault((u.entry, kind), []).append(u)
    for (entry, kind), units in groups.items():
        size = study.lmms_eval.tasks_per_job if kind == "eval" and study.lmms_eval.tasks_per_job else len(units)
        for start in range(0, len(units), size):
            chunk = units[start : start + size]
            job_id = config_hash({"kind": kind, "units": sorted(u.unit_id for u in chunk)})
            job_dir = jobs_root / job_id
            if kind == "eval":
                argv = eval_argv(study, models[entry], [u.task for u in chunk], job_dir)
            elif kind == "score-a":
                argv = score_a_argv(study, entries[entry], job_dir)
            else:
                argv = score_c_argv(study, entries[entry], job_dir, [u.score for u in chunk])
            jobs.append(Job(job_id, kind, entry, chunk, argv, dict(env), gpus))
    return jobs


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def shell_line(argv: Sequence[str], env: Optional[Dict[str, str]] = None) -> str:
    """``argv`` as one shell line (with ``env`` assignments in front), every word quoted with ``shlex.quote``
    so that no value (a ';' in an environment value, a space in a path) is read as shell syntax."""
    import shlex

    for k in env or {}:
        if not ENV_NAME.match(k):
            raise StudyError(f"env: {k!r} is not an environment variable name (letters, digits and '_'); rename it")
    pre = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in sorted((env or {}).items()))
    return (pre + " " if pre else "") + " ".join(shlex.quote(str(a)) for a in argv)


def shell_comment(text: str) -> str:
    """``text`` as one ``# ...`` comment line: line breaks and control characters become spaces, so a name
    cannot end the comment and start a command."""
    return "# " + "".join(c if c.isprintable() else " " for c in str(text))


def cwd_for(study: Study) -> str:
    """Jobs run in the study's output folder (lmms-eval misreads ``--tasks X`` when a folder X is in cwd;
    the output folder holds no task-named folders)."""
    return str(study.output_dir)
