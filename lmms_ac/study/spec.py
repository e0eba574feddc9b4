"""The study file: a YAML document validated into typed objects (pydantic).

Every key of every section is known; an unknown key, a missing one or a wrong type is an error whose
message names the key's full path (``models[1].pretrainde``), says what is wrong and how to fix it
("did you mean 'pretrained'?"). Cross-field rules (unique model names, probes on benchmarks of the
study, a score section without anything to score...) are checked after the types, with the same
kind of message. See ``lmms_ac/study/example.py`` (``lmms-ac study init``) for every key, commented.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Type, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")
_TASK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class StudyError(ValueError):
    """A study file that cannot be used; the message lists every problem with its key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """A trained checkpoint evaluated with lmms-eval (``lmms_ac_llava``)."""

    name: str
    pretrained: str
    variant: Optional[str] = None
    model_base: Optional[str] = None
    vision_tower: Optional[str] = None
    model_args: Dict[str, Union[str, int, float, bool]] = Field(default_factory=dict)
    stage1: Optional[str] = None  # stage-1 checkpoint for the A score
    vision: Optional[str] = None  # representation spec for C / C_ocr
    benchmarks: Optional[List[str]] = None  # restrict to these benchmarks of the study
    # the study's probes to run on this model: true (all), false (none) or a list of the probes' `perturbation:` /
    # `tag:` values (e.g. [patchshuffle4] on a tiled LLaVA-NeXT checkpoint, which refuses token-group probes)
    probes: Union[bool, List[str]] = True

    @field_validator("probes", mode="before")
    @classmethod
    def _probes(cls, v: Any) -> Any:
        if isinstance(v, bool) or (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            return v
        raise ValueError(
            "give true (every probe of the study), false (none) or a list of the study's probe names, "
            "e.g. probes: [patchshuffle4]"
        )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a usable name: letters, digits, '_', '-', '.', '+' only, e.g. 'clip336'")
        return v

    @property
    def variant_name(self) -> str:
        return self.variant or self.name


class CandidateSpec(_Strict):
    """A representation scored for A/C only (it need not be trained)."""

    name: str
    vision: Optional[str] = None
    stage1: Optional[str] = None
    model_base: Optional[str] = None
    vision_tower: Optional[str] = None
    variant: Optional[str] = None

    _name = field_validator("name")(ModelSpec._name.__func__)

    @property
    def variant_name(self) -> str:
        return self.variant or self.name


class ProbeSpec(_Strict):
    """Robustness variants from the catalogue: ``perturbation`` (a seed-free form like ``patchshuffle4``
    or a probe name like ``pdrop_random`` for all its variants) or a generated ``tag``."""

    perturbation: Optional[str] = None
    tag: Optional[str] = None
    seeds: Optional[int] = Field(default=None, ge=1)
    benchmarks: Optional[List[str]] = None


class EvalSpec(_Strict):
    """lmms-eval settings shared by every evaluation job."""

    batch_size: int = Field(default=8, ge=1)
    limit: Optional[float] = Field(default=None, gt=0)
    num_fewshot: Optional[int] = Field(default=None, ge=0)
    log_samples: bool = True
    verbosity: str = "WARNING"
    tasks_per_job: int = Field(default=0, ge=0)  # 0: all pending tasks of a model in one job
    extra_args: List[str] = Field(default_factory=list)
    env: Dict[str, str] = Field(default_factory=dict)


class ScoreASpec(_Strict):
    captions: str
    images: str
    n: int = Field(default=100, ge=1)
    seed: int = 0
    method: Literal["caption_ll", "embed"] = "caption_ll"
    reference: List[str] = Field(default_factory=list)
    batch_size: int = Field(default=8, ge=1)
    dtype: str = "auto"


class ScoreCSpec(_Strict):
    spair: str
    split: str = "test"
    limit: Optional[int] = Field(default=None, ge=1)
    alpha: float = Field(default=0.1, gt=0)
    method: Literal["argmax", "window_softargmax"] = "argmax"
    batch_size: int = Field(default=16, ge=1)


class ScoreCOcrSpec(_Strict):
    n: int = Field(default=200, ge=1)
    seed: int = 0


class ScoresSpec(_Strict):
    A: Optional[ScoreASpec] = None
    C: Optional[ScoreCSpec] = None
    C_ocr: Optional[ScoreCOcrSpec] = None
    device: str = "auto"  # auto: cuda when the job has a GPU, else cpu


class SlurmSpec(_Strict):
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time: int = Field(default=240, ge=1)  # minutes per job
    gpus_per_job: int = Field(default=1, ge=0)
    cpus_per_job: int = Field(default=8, ge=1)
    mem_gb: Optional[float] = Field(default=None, gt=0)
    constraint: Optional[str] = None
    array_parallelism: int = Field(default=32, ge=1)
    setup: List[str] = Field(default_factory=list)  # shell lines run before each job (module load ...)
    additional: Dict[str, Union[str, int]] = Field(default_factory=dict)  # extra #SBATCH options
    requeue: bool = True  # requeue preempted / timed-out jobs
    poll_s: float = Field(default=10.0, gt=0)


class ExecutorSpec(_Strict):
    type: Literal["local", "slurm"] = "local"
    gpus: Union[Literal["auto", "none"], int, List[int]] = "auto"
    gpus_per_job: int = Field(default=1, ge=1)
    accelerate: bool = False  # run lmms-eval under `accelerate launch --num_processes gpus_per_job`
    max_attempts: int = Field(default=2, ge=1)
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)


class ReportSpec(_Strict):
    outputs: List[Literal["table", "scores", "leaderboard", "fit", "recommend", "robustness", "plots", "html"]] = Field(
        default_factory=lambda: ["table", "scores", "leaderboard", "fit", "recommend", "robustness", "plots", "html"]
    )
    benchmarks: Optional[List[str]] = None
    metrics: Dict[str, str] = Field(default_factory=dict)
    recommend_benchmark: Optional[str] = None
    normalize: Literal["none", "minmax"] = "minmax"
    formats: List[str] = Field(default_factory=lambda: ["png"])


class EstimateSpec(_Strict):
    """Cost guesses used by ``study plan`` until finished jobs give measured times (minutes)."""

    eval_task_min: float = Field(default=15.0, gt=0)
    score_min: float = Field(default=10.0, gt=0)


class Study(_Strict):
    name: str
    output: str = "study_out"
    models: List[ModelSpec] = Field(default_factory=list)
    candidates: List[CandidateSpec] = Field(default_factory=list)
    benchmarks: List[str] = Field(default_factory=list)
    probes: List[ProbeSpec] = Field(default_factory=list)
    lmms_eval: EvalSpec = Field(default_factory=EvalSpec)
    scores: ScoresSpec = Field(default_factory=ScoresSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    estimate: EstimateSpec = Field(default_factory=EstimateSpec)
    env: Dict[str, str] = Field(default_factory=dict)  # environment of every job

    # set by load_study: the file's folder (relative paths in the file are relative to it)
    root: str = Field(default=".", exclude=True)

    def path(self, value: str) -> str:
        """A path from the file, made absolute against the study file's folder (hub ids stay as given)."""
        p = Path(value).expanduser()
        if p.is_absolute():
            return str(p)
        candidate = Path(self.root) / p
        if candidate.exists() or value.startswith((".", "/")) or "/" not in value or value.count("/") > 1:
            return str(candidate.resolve())
        return value  # "org/name" that does not exist locally: a hub id

    @property
    def output_dir(self) -> Path:
        out = Path(self.output).expanduser()
        return out if out.is_absolute() else (Path(self.root) / out).resolve()

    def local_path(self, value: str) -> str:
        """A path that must be local (data folders): absolute against the study file's folder."""
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else (Path(self.root) / p).resolve())


# ------------------------------------------------------------------------------------- messages
def _loc(loc: Sequence[Union[str, int]]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: Sequence[Union[str, int]]) -> Optional[Type[BaseModel]]:
    """The pydantic model class that holds the last key of ``loc``."""
    import typing

    cls: Any = Study
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        ann = cls.model_fields[part].annotation
        for _ in range(3):  # unwrap Optional[...] / List[...]
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                break
            ann = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), args[0] if args else ann)
        cls = ann
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def did_you_mean(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=2, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _message(err: Dict[str, Any]) -> str:
    loc = [
        p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal[", "int", "list[")))
    ]
    where = _loc(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        cls = _model_at(loc)
        known = [f for f in cls.model_fields if f != "root"] if cls else []
        return (
            f"{where}: unknown key{did_you_mean(str(loc[-1]), known)} "
            f"Allowed here: {', '.join(known)}. Remove or rename it."
        )
    if kind == "missing":
        return f"{where}: required key is missing; add it (see `lmms-ac study init` for an example)"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{where}: {err['input']!r} is not allowed; use one of {expected}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg} (got {err.get('input')!r}); fix the value"


# ------------------------------------------------------------------------------------- loading
def parse_study(data: Any, root: Union[str, Path] = ".", source: str = "the input") -> Study:
    """Validate a parsed YAML document; raises ``StudyError`` listing every problem."""
    if not isinstance(data, dict):
        raise StudyError(
            f"{source}: the file must be a YAML mapping (name:, models:, benchmarks: ...); "
            "run `lmms-ac study init FILE` for an example"
        )
    try:
        study = Study.model_validate({**data, "root": str(Path(root).resolve())})
    except ValidationError as err:
        seen: List[str] = []
        for e in err.errors():
            msg = _message(e)
            if msg not in seen:
                seen.append(msg)
        raise StudyError(f"{source} is not a valid study file:\n  - " + "\n  - ".join(seen)) from None
    problems = check_study(study)
    if problems:
        raise StudyError(f"{source} is not a valid study file:\n  - " + "\n  - ".join(problems))
    return study


def load_study(path: Union[str, Path]) -> Study:
    """Read and validate a study YAML file."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"study file {path} does not exist; `lmms-ac study init {path}` writes an example")
    if path.is_dir():
        raise StudyError(f"{path} is a folder; give the study's YAML file (`lmms-ac study init FILE` writes one)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise StudyError(f"{path}: not UTF-8 text (byte {err.start}); a study file is YAML text") from None
    return parse_study(data, path.parent, str(path))


def probe_labels(study: Study) -> List[str]:
    """The names a model's ``probes:`` list may use: each study probe's ``perturbation`` or ``tag``, in order."""
    return list(dict.fromkeys(p.perturbation or p.tag for p in study.probes if p.perturbation or p.tag))


def model_probe_labels(study: Study, m: ModelSpec) -> List[str]:
    """The study probes (by name) that run on model ``m``: all for ``probes: true``, none for ``false``."""
    if m.probes is True:
        return probe_labels(study)
    return [] if m.probes is False else [name for name in probe_labels(study) if name in m.probes]


def _dups(names: Sequence[str]) -> List[str]:
    return sorted({n for n in names if list(names).count(n) > 1})


def check_study(study: Study) -> List[str]:
    """Rules across keys (types are already checked). Returns the problems, empty when none."""
    out: List[str] = []
    names = [m.name for m in study.models] + [c.name for c in study.candidates]
    for d in _dups(names):
        out.append(f"models/candidates: the name {d!r} is used twice; give each entry its own name")
    for d in _dups(study.benchmarks):
        out.append(f"benchmarks: {d!r} is listed twice; remove the duplicate")
    for b in study.benchmarks:
        if not _TASK.match(b):
            out.append(
                f"benchmarks: {b!r} is not an lmms-eval task name (letters, digits, '_', '-', '.'); "
                "list one task per entry, e.g. benchmarks: [mme, seed]"
            )
    sl = study.executor.slurm
    lines = {"name": study.name, **{f"executor.slurm.{k}": getattr(sl, k) for k in ("partition", "account", "qos")}}
    lines["executor.slurm.constraint"] = sl.constraint
    lines.update({f"executor.slurm.additional.{k}": str(v) for k, v in sl.additional.items()})
    for where, value in lines.items():  # each becomes one `#SBATCH` line or a job name: a line break would add one
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
            out.append(f"{where}: {value!r} holds a line break or control character; write it on one line")
    for k in sl.additional:
        if not _OPTION.match(k):
            out.append(
                f"executor.slurm.additional: {k!r} is not an sbatch option name (e.g. mail-type); remove the "
                "leading '--' or rename it"
            )
    for where, env in (("env", study.env), ("lmms_eval.env", study.lmms_eval.env)):
        for k in env:
            if not _ENV.match(k):
                out.append(f"{where}: {k!r} is not an environment variable name (letters, digits and '_'); rename it")
    if not study.models and not study.candidates:
        out.append("models: the study has no models and no candidates; add at least one model (name:, pretrained:)")
    if study.models and not study.benchmarks and not study.probes:
        out.append(
            "benchmarks: the study's models have nothing to run; list lmms-eval tasks, e.g. benchmarks: [mme, seed]"
        )
    for i, m in enumerate(study.models):
        for b in m.benchmarks or []:
            if b not in study.benchmarks:
                out.append(
                    f"models[{i}].benchmarks: {b!r} is not among the study's benchmarks"
                    f"{did_you_mean(b, study.benchmarks)} Add it to benchmarks: or remove it here."
                )
        for key in ("pretrained", "model_base", "vision_tower", "variant"):
            if key in m.model_args:
                out.append(f"models[{i}].model_args.{key}: set it as the model's own key `{key}:`, not in model_args")
    labels = probe_labels(study)
    for i, m in enumerate(study.models):
        if isinstance(m.probes, bool):
            continue
        for d in _dups(m.probes):
            out.append(f"models[{i}].probes: {d!r} is listed twice; remove the duplicate")
        for name in dict.fromkeys(m.probes):
            if name in labels:
                continue
            if not labels:
                out.append(
                    f"models[{i}].probes: {name!r} names a probe, but the study has none; add it to the study's "
                    "probes: (e.g. - perturbation: patchshuffle4) or remove it here"
                )
                continue
            out.append(
                f"models[{i}].probes: {name!r} is not among the study's probes{did_you_mean(name, labels) or '.'} "
                f"The study's probes (their perturbation: or tag:) are {', '.join(labels)}; name some of them, "
                "or add it to the study's probes:"
            )
    for i, p in enumerate(study.probes):
        if bool(p.perturbation) == bool(p.tag):
            out.append(
                f"probes[{i}]: give exactly one of `perturbation:` (e.g. patchshuffle4) or `tag:` "
                "(e.g. mme_tokperm_5seeds)"
            )
        for b in p.benchmarks or []:
            if b not in study.benchmarks:
                out.append(
                    f"probes[{i}].benchmarks: {b!r} is not among the study's benchmarks"
                    f"{did_you_mean(b, study.benchmarks)} Add it to benchmarks: or remove it here."
                )
    everyone = list(study.models) + list(study.candidates)
    sc = study.scores
    if sc.A is not None and not any(e.stage1 for e in everyone):
        out.append(
            "scores.A: no model or candidate has `stage1:` (the stage-1 checkpoint the A score reads); "
            "add stage1: to the entries to score, or remove scores.A"
        )
    if (sc.C is not None or sc.C_ocr is not None) and not any(e.vision for e in everyone):
        out.append(
            "scores.C/C_ocr: no model or candidate has `vision:` (the representation spec, e.g. "
            "clip:openai/clip-vit-large-patch14-336); add vision: to the entries to score"
        )
    if sc.A is not None and sc.A.method == "embed" and not sc.A.reference:
        out.append("scores.A.reference: method embed needs reference stage-1 checkpoints (a list)")
    for i, c in enumerate(study.candidates):
        if not c.vision and not c.stage1:
            out.append(f"candidates[{i}]: {c.name!r} has neither `vision:` (C, C_ocr) nor `stage1:` (A); add one")
    ex = study.executor
    if isinstance(ex.gpus, list) and _dups([str(g) for g in ex.gpus]):
        out.append("executor.gpus: a GPU index is listed twice")
    if ex.accelerate and ex.type == "local" and ex.gpus == "none":
        out.append("executor.accelerate: needs GPUs; set executor.gpus to auto or a list, or accelerate: false")
    # report.benchmarks / recommend_benchmark may be law names (seed_image for the task seed): checked by the report
    return out
