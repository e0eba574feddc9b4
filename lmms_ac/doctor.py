"""``lmms-ac doctor``: checks the environment a user actually has, one line per check with the fix.

Checks are small functions in one registry (``CHECKS``); each returns ``Finding``s. The cheap ones
(``cheap=True``: versions and import paths, no torch, no TaskManager) also run when the model plugin
loads (``require_runtime``), so a broken environment fails with the same message instead of a
traceback deep inside lmms-eval.

``KNOWN_BAD`` is the table of dependency versions known to break lmms-ac or lmms-eval 0.7.3; add a
row when an upstream release breaks us (``make test-latest`` is what finds them).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Tuple

from lmms_ac.registry import Registry

OK, INFO, WARN, FAIL = "ok", "info", "warn", "FAIL"


@dataclass(frozen=True)
class Finding:
    status: str  # ok | info | warn | FAIL
    check: str
    message: str
    fix: str = ""

    def line(self) -> str:
        fix = f"  -> fix: {self.fix}" if self.fix and self.status in (WARN, FAIL) else ""
        return f"[{self.status:>4}] {self.check}: {self.message}{fix}"


@dataclass(frozen=True)
class KnownBad:
    """A dependency version range that is known to break us, with the reason and the fix."""

    package: str
    bad: str  # a PEP 440 specifier, e.g. ">=4"
    reason: str
    fix: str
    when: Optional[Tuple[str, str]] = None  # bad only while this other package is in this range (absent: not bad)


# tokenizer.model files are read through sentencepiece's generated protobuf module: the pair must agree
SENTENCEPIECE_FIX = "pip install 'sentencepiece>=0.2.1,<0.2.3' 'protobuf>=4.21,<7'"

KNOWN_BAD: List[KnownBad] = [
    KnownBad(
        "filelock",
        ">=4",
        "lmms-eval 0.7.3's evaluator imports filelock._api, which filelock 4 removed "
        "(every evaluation fails with 'No module named filelock._api')",
        "pip install 'filelock<4'",
    ),
    KnownBad(
        "sentencepiece",
        ">=0.2.3",
        "its generated sentencepiece_model_pb2 needs protobuf>=7.36.1, which wandb (pulled in by lmms-eval) forbids: "
        "every tokenizer.model (LLaVA-1.5, Vicuna) fails to load ('Error parsing line' from a TikToken fallback)",
        SENTENCEPIECE_FIX,
        when=("protobuf", "<7.36.1"),
    ),
    KnownBad(
        "lmms-eval",
        "<0.7.3",
        "lmms-ac's task-index and dataset hooks are written against lmms-eval 0.7.3",
        "pip install 'lmms-eval>=0.7.3,<0.8'",
    ),
    KnownBad(
        "lmms-eval",
        ">=0.8",
        "lmms-ac's task-index and dataset hooks are written against lmms-eval 0.7.x (see lmms_ac/plugin.py)",
        "pip install 'lmms-eval>=0.7.3,<0.8'",
    ),
]


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], List[Finding]]
    cheap: bool  # no torch import, no TaskManager: safe to run at every model load


CHECKS: Registry[Check] = Registry("doctor check")


def check(name: str, *, cheap: bool):
    def _add(fn: Callable[[], List[Finding]]) -> Callable[[], List[Finding]]:
        CHECKS.register(name, Check(name, fn, cheap))
        return fn

    return _add


def installed_version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def known_bad_findings(
    versions: Optional[Callable[[str], Optional[str]]] = None, table: Iterable[KnownBad] = KNOWN_BAD
) -> List[Finding]:
    """One FAIL per installed package whose version falls in a known-bad range (``versions`` is injectable)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    versions = versions or installed_version
    found = []
    for row in table:
        have = versions(row.package)
        if have is None:
            continue
        other = versions(row.when[0]) if row.when else None
        if row.when and other is None:
            continue
        try:
            bad = Version(have) in SpecifierSet(row.bad, prereleases=True)
            if row.when:
                bad = bad and Version(other) in SpecifierSet(row.when[1], prereleases=True)
        except InvalidVersion:
            continue
        if bad:
            with_other = f" with {row.when[0]} {other}" if row.when else ""
            found.append(
                Finding(
                    FAIL,
                    "known-bad versions",
                    f"{row.package} {have} ({row.bad}){with_other}: {row.reason}",
                    row.fix,
                )
            )
    return found


@check("python", cheap=True)
def _python() -> List[Finding]:
    v = sys.version_info
    if v < (3, 10):
        return [Finding(FAIL, "python", f"Python {v.major}.{v.minor} is too old", "use Python 3.10 or newer")]
    return [Finding(OK, "python", f"Python {v.major}.{v.minor}.{v.micro} at {sys.executable}")]


@check("known-bad versions", cheap=True)
def _known_bad() -> List[Finding]:
    return known_bad_findings() or [
        Finding(OK, "known-bad versions", f"none of the {len(KNOWN_BAD)} known incompatibilities")
    ]


@check("lmms-eval", cheap=True)
def _lmms_eval() -> List[Finding]:
    name = "lmms-eval"
    have = installed_version("lmms-eval")
    if have is None or importlib.util.find_spec("lmms_eval") is None:
        return [Finding(FAIL, name, "lmms-eval is not installed", "pip install 'lmms-eval>=0.7.3,<0.8'")]
    # the evaluator path: lmms_eval.evaluator and what it imports when an evaluation starts (found, not imported:
    # importing the evaluator loads torch; the full `lmms-ac doctor` imports it in "lmms-eval evaluator import")
    problems = []
    for module in ("lmms_eval.evaluator", "filelock._api", "datasets.utils._filelock"):
        spec, err = find_spec_or_error(module)
        if spec is None:
            problems.append(f"{module} ({err})" if err else f"{module} (not found)")
    if not problems:
        return [Finding(OK, name, f"lmms-eval {have}, evaluator imports resolve")]
    fix = "reinstall lmms-ac's dependencies: pip install -c constraints.txt -e . (then run `lmms-ac doctor`)"
    if any(p.startswith("filelock._api") for p in problems):
        fix = "pip install 'filelock<4' (see the known-bad table); " + fix
    return [Finding(FAIL, name, f"lmms-eval {have} is installed but cannot import {'; '.join(problems)}", fix)]


def find_spec_or_error(module: str):
    """(spec or None, the exception that stopped the lookup as 'Type: message', or '')."""
    try:
        return importlib.util.find_spec(module), ""
    except Exception as err:  # noqa: BLE001 - a parent package that fails to import raises anything
        return None, f"{type(err).__name__}: {err}"


def _find_spec(module: str):
    return find_spec_or_error(module)[0]


@check("lmms-eval evaluator import", cheap=False)
def _lmms_eval_import() -> List[Finding]:
    name = "lmms-eval evaluator import"
    try:
        importlib.import_module("lmms_eval.evaluator")
    except Exception as err:  # noqa: BLE001 - report the real failure, whatever it is
        return [
            Finding(
                FAIL,
                name,
                f"import lmms_eval.evaluator fails: {type(err).__name__}: {err}",
                "reinstall the tested versions: pip install -c constraints.txt -e . (or see the known-bad table)",
            )
        ]
    return [Finding(OK, name, "lmms_eval.evaluator imports")]


def sentencepiece_problem() -> Optional[str]:
    """Why ``tokenizer.model`` files cannot be read here (with the fix), or None. transformers reads them
    through sentencepiece's generated protobuf module; sentencepiece 0.2.3's needs protobuf >= 7, which
    lmms-eval's wandb forbids, and transformers then misreads the file as a TikToken vocabulary."""
    try:
        import sentencepiece  # noqa: F401
        from sentencepiece import sentencepiece_model_pb2  # noqa: F401
    except Exception as err:  # noqa: BLE001 - ImportError, protobuf's VersionError, ...
        return (
            f"sentencepiece's protobuf module does not import ({type(err).__name__}: {err}); fix: {SENTENCEPIECE_FIX}"
        )
    return None


@check("sentencepiece", cheap=True)
def _sentencepiece() -> List[Finding]:
    problem = sentencepiece_problem()
    if problem:
        text, _, _ = problem.partition("; fix: ")
        return [Finding(FAIL, "sentencepiece", f"tokenizer.model files cannot be read: {text}", SENTENCEPIECE_FIX)]
    versions = f"sentencepiece {installed_version('sentencepiece')}, protobuf {installed_version('protobuf')}"
    return [Finding(OK, "sentencepiece", f"{versions}: the protobuf module imports")]


@check("sentencepiece tokenizer", cheap=False)
def _sentencepiece_tokenizer() -> List[Finding]:
    """Train a tiny LLaMA-style tokenizer.model and load it through transformers, as a checkpoint's is loaded."""
    import io
    import json
    import tempfile

    name = "sentencepiece tokenizer"
    try:
        import sentencepiece as spm
        from transformers import AutoTokenizer

        model = io.BytesIO()
        words = ["a photo of a cat on a mat", "What is in the image? Yes no 0 1 2", "USER: ASSISTANT:"]
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(words * 4), model_writer=model, vocab_size=300, model_type="bpe",
            byte_fallback=True, split_digits=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
        )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "tokenizer.model").write_bytes(model.getvalue())
            Path(tmp, "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
            ids = AutoTokenizer.from_pretrained(tmp)("a cat", add_special_tokens=False)["input_ids"]
            expected = spm.SentencePieceProcessor(model_proto=model.getvalue()).encode("a cat")
    except Exception as err:  # noqa: BLE001 - report the real failure
        return [Finding(FAIL, name, f"a tokenizer.model does not load: {type(err).__name__}: {err}", SENTENCEPIECE_FIX)]
    if list(ids) != list(expected):
        return [
            Finding(
                FAIL,
                name,
                f"transformers reads a tokenizer.model as {ids}, SentencePiece as {expected}",
                SENTENCEPIECE_FIX,
            )
        ]
    return [Finding(OK, name, "a SentencePiece tokenizer.model loads through transformers and matches sentencepiece")]


@check("plugin entry point", cheap=True)
def _entry_point() -> List[Finding]:
    name = "plugin entry point"
    eps = [ep for ep in metadata.entry_points(group="lmms_eval.models") if ep.value.startswith("lmms_ac.")]
    if not eps:
        return [
            Finding(
                FAIL,
                name,
                "lmms-ac's lmms_eval.models entry point is not registered",
                "reinstall the package (pip install -e . in the checkout, or pip install lmms-ac)",
            )
        ]
    try:
        eps[0].load()
    except Exception as err:  # noqa: BLE001 - e.g. an editable install made before the entry point moved
        return [
            Finding(
                FAIL,
                name,
                f"{eps[0].name} = {eps[0].value} does not load ({type(err).__name__}: {err})",
                "reinstall the package so its entry point is current (pip install -e . in the checkout)",
            )
        ]
    return [Finding(OK, name, f"{eps[0].name} = {eps[0].value}")]


@check("torch", cheap=False)
def _torch() -> List[Finding]:
    name = "torch"
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - report any import failure
        return [Finding(FAIL, name, f"torch does not import: {err}", "install torch (make env, or pip install torch)")]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return [
            Finding(
                OK,
                name,
                f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): {names}"
                + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""),
            )
        ]
    why = (
        f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
        if visible is not None
        else ("this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible to this CUDA build")
    )
    return [
        Finding(
            WARN,
            name,
            f"torch {torch.__version__} runs on CPU only: {why}",
            "fine for tests; on a GPU machine install a CUDA build of torch and check CUDA_VISIBLE_DEVICES",
        )
    ]


@check("tasks visible to lmms-eval", cheap=False)
def _tasks() -> List[Finding]:
    name = "tasks visible to lmms-eval"
    try:
        from lmms_ac.plugin import task_manager

        manager = task_manager()
    except Exception as err:  # noqa: BLE001
        return [
            Finding(
                FAIL,
                name,
                f"lmms-eval's TaskManager failed: {err}",
                "run `lmms-ac doctor` after fixing the checks above",
            )
        ]
    ours = [t for t in ("seed", "mme_tokperm") if t not in manager.all_tasks]
    if ours:
        return [
            Finding(
                FAIL,
                name,
                f"{', '.join(ours)} not in lmms-eval's task index",
                "reinstall lmms-ac; a directory named like a task in the working directory also hides tasks",
            )
        ]
    shadows = [t for t in ("mme", "seed", "mmbench") if Path(t).is_dir()]
    extra = (
        [
            Finding(
                WARN,
                name,
                f"directories {shadows} in the working directory: `--tasks X` selects nothing when a directory X "
                "exists",
                "run lmms-eval from another directory",
            )
        ]
        if shadows
        else []
    )
    return [Finding(OK, name, f"{len(manager.all_tasks)} tasks, including seed and the robustness variants")] + extra


@check("dataset mirrors", cheap=False)
def _mirrors() -> List[Finding]:
    from lmms_ac.local_datasets import ENV_VAR, mirror_dirs

    name = "dataset mirrors"
    dirs = mirror_dirs()
    if not dirs:
        return [Finding(INFO, name, f"{ENV_VAR} is unset: datasets load from the hub")]
    found = []
    for d in dirs:
        if not d.is_dir():
            found.append(
                Finding(
                    FAIL,
                    name,
                    f"{ENV_VAR} lists {d}, which is not a directory",
                    f"create it with `lmms-ac mirror TASK... --to {d}` or fix {ENV_VAR}",
                )
            )
            continue
        held = sorted(
            p.name for p in d.iterdir() if (p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file()
        )
        found.append(
            Finding(
                OK if held else WARN,
                name,
                f"{d}: {len(held)} dataset(s)" + (f": {', '.join(held)}" if held else ""),
                "" if held else f"fill it with `lmms-ac mirror TASK... --to {d}`",
            )
        )
    return found


@check("decord", cheap=False)
def _decord() -> List[Finding]:
    if _find_spec("decord") is None:
        return [
            Finding(
                INFO,
                "decord",
                "not installed: lmms-eval's built-in llava_hf model imports it (only needed to compare "
                "against llava_hf; lmms_ac_llava does not need it): pip install decord",
            )
        ]
    return [Finding(OK, "decord", "installed (lmms-eval's built-in llava_hf can load)")]


def run_checks(*, cheap_only: bool = False) -> List[Finding]:
    """Every check's findings in registration order; ``cheap_only`` ends with an info line naming what it skipped."""
    findings: List[Finding] = []
    skipped = []
    for entry in CHECKS.snapshot().values():  # registration order
        if cheap_only and not entry.cheap:
            skipped.append(entry.name)
            continue
        findings.extend(entry.run())
    if skipped:
        findings.append(
            Finding(
                INFO,
                "quick",
                f"skipped (not run at model load: torch, transformers, lmms-eval's evaluator and task index are not "
                f"imported): {', '.join(skipped)}; run `lmms-ac doctor` without --quick for them",
            )
        )
    return findings


class EnvironmentBroken(RuntimeError):
    """The environment cannot run lmms-ac; the message lists each problem with its fix."""


def require_runtime() -> None:
    """Raise ``EnvironmentBroken`` naming each problem and fix when a cheap check fails (called at model load)."""
    failed = [f for f in run_checks(cheap_only=True) if f.status == FAIL]
    if failed:
        lines = "\n".join(f"  {f.message}\n    fix: {f.fix}" for f in failed)
        raise EnvironmentBroken(f"lmms-ac cannot run in this environment (`lmms-ac doctor` checks it all):\n{lines}")
