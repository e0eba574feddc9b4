"""Issue 20, item 4: a fuzz pass over every ``lmms-ac`` subcommand's arguments and the files it reads.

Each subcommand of the real parser (found by walking it, so a new one is fuzzed too) is called in-process through
``lmms_ac.cli.main(argv)`` with hostile arguments (missing, empty, negative, nan, folders, symlinks, text with
',', '=', newlines and formulas) and hostile files (a study YAML, a tidy table, a score store, prompts, captions,
results JSON: valid, cut short, empty, binary, conflicting duplicates, only perturbed rows, formula names) in a
fresh sandbox. Each run must end with exit code 0, 1 (a command's own "found problems") or 2 (a clear error,
argparse's included) and no exception escaping ``main`` (a traceback); afterwards no file in the sandbox may have
changed except under the paths given as outputs (``--out`` and its kin, or the study's own output folder).
Seeded (``derandomize``) so a failure reproduces; ``LMMS_AC_FUZZ_SCALE=10`` runs ten times as many cases."""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lmms_ac.cli import build_parser, main  # noqa: E402

#: not fuzzed here, and where they are tested instead
SKIPPED = {
    ("demo",): "runs the whole pipeline (tests/test_demo.py; its --overwrite rule: test_hardening_outputs.py)",
    ("doctor",): "reads no input but --quick (tests/test_doctor.py)",
}
#: options left out: they wait by design
LEFT_OUT = {"--watch", "--interval"}
#: argument destinations that name an output: a command may write there (and below), nowhere else
OUTPUT_DESTS = {"out", "to", "out_dir", "summary_out", "dropped_out", "coef_out", "pred_out", "plot", "file"}
#: commands a fast test cannot finish (they build an lmms-eval task index or start a program): the conftest guard
#: stops them with an AssertionError naming the slow mark; the arguments were checked before that point
GUARD = "mark it @pytest.mark.slow"
#: hostile words for any text argument
WORDS = [
    "",
    "-",
    "x,trust_remote_code=on",
    "a=b",
    "two\nlines",
    '=HYPERLINK("http://x")',
    "nan",
    "inf",
    "é€😀",
    "../..",
]
NUMBERS = ["0", "1", "2", "-1", "1.5", "nan", "inf", "x", "", "1e309"]
#: keeps a simulation short when the fuzz leaves its sizes at their defaults (a drawn value still overrides it)
FIXED = {"policy evaluate": ["--runs=2", "--worlds=1"], "plot policy": ["--runs=2"]}
MAX_EXAMPLES = {"default": 12, "report": 3, "policy evaluate": 4, "plot policy": 3, "plot law": 3, "fit": 5}


# ---------------------------------------------------------------------------------------------- the commands
def _commands() -> List[Tuple[Tuple[str, ...], argparse.ArgumentParser]]:
    out = []

    def walk(parser: argparse.ArgumentParser, prefix: Tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append((prefix, parser))
            return
        for name, sub in subs[0].choices.items():
            walk(sub, prefix + (name,))

    walk(build_parser(), ())
    return [(c, p) for c, p in out if c not in SKIPPED]


COMMANDS = _commands()
PARAMS = [pytest.param(c, p, id=" ".join(c)) for c, p in COMMANDS]


# ---------------------------------------------------------------------------------------------- the files
@functools.lru_cache(maxsize=1)
def _valid_texts() -> Dict[str, str]:
    from lmms_ac.results.table import table_to_csv
    from lmms_ac.scores.store import SCORE_COLUMNS
    from lmms_ac.strict_csv import frame_to_csv
    from lmms_ac.testing.results_fixture import TRAINED, make_table, score_rows

    table = make_table(seeds=(0, 1), benchmarks=["mme", "seed"], perturbations=["tokperm"])
    return {
        "table.csv": table_to_csv(table),
        "scores.csv": frame_to_csv(score_rows(dict(list(TRAINED.items())[:6]))[SCORE_COLUMNS]),
        "study.yaml": (
            "name: fuzz\noutput: ../study_out\nmodels:\n  - name: m\n    pretrained: folder\n"
            "benchmarks: [mme]\nexecutor: {type: local, gpus: none}\n"
        ),
        "prompts.txt": "Describe the image.\nWhat is shown?\n",
        "captions.json": '[{"id": "1", "image": "a.jpg", "conversations": [{"value": "<image>"}, {"value": "a cat"}]}]',
        "results.json": '{"results": {"mme": {"alias": "mme"}}, "config": {"model_args": "pretrained=x"}}',
    }


HOSTILE_LINES = ["=HYPERLINK(1),-1,@x", "inf,nan,-inf", "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p"]


def _mutate(text: str, kind: int, k: int) -> bytes:
    """``text`` as is (0), cut at ``k`` (1), emptied (2), random bytes (3), with a hostile or repeated last line
    added (4), with bytes that are not UTF-8 inserted (5). Drawn as two small integers, so a failure prints short."""
    data = text.encode()
    if kind == 1:
        return data[: k % max(1, len(data))]
    if kind == 2:
        return b""
    if kind == 3:
        return random.Random(k).randbytes(48)
    if kind == 4:
        extra = (HOSTILE_LINES + [text.splitlines()[-1]])[k % (len(HOSTILE_LINES) + 1)]
        return data + extra.encode() + b"\n"
    if kind == 5:
        cut = k % max(1, len(data))
        return data[:cut] + b"\xff\xfe" + data[cut:]
    return data


def _files(draw) -> Dict[str, bytes]:
    return {
        name: _mutate(text, draw(st.integers(0, 5)), draw(st.integers(0, 10_000)))
        for name, text in _valid_texts().items()
    }


def _sandbox(files: Dict[str, bytes]) -> Path:
    root = Path(tempfile.mkdtemp(prefix="lmms-ac-fuzz-"))
    for d in ("inputs/folder", "work", "out", "outside"):
        (root / d).mkdir(parents=True)
    for name, data in files.items():
        (root / "inputs" / name).write_bytes(data)
    (root / "outside" / "precious.txt").write_text("not yours")
    (root / "inputs" / "link.csv").symlink_to(root / "outside" / "precious.txt")
    (root / "inputs" / "dangling.csv").symlink_to(root / "nowhere" / "x.csv")
    return root


def _snapshot(root: Path) -> Dict[str, Tuple]:
    seen: Dict[str, Tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st_ = p.lstat()
            if p.is_dir() and not p.is_symlink():  # a folder changes when an entry is added: its entries count
                seen[str(p)] = ("folder", st_.st_mode)
            else:
                seen[str(p)] = (p.is_symlink() and os.readlink(p), st_.st_size, st_.st_mtime_ns, st_.st_mode)
    return seen


# ---------------------------------------------------------------------------------------------- the arguments
def _value(draw, action: argparse.Action, root: Path) -> str:
    """A plausible value most of the time (so the command gets past argparse into its own checks and readers), a
    hostile one otherwise."""
    hostile = draw(st.integers(0, 3)) == 0
    inputs = [str(root / "inputs" / n) for n in (*_valid_texts(), "folder", "link.csv", "dangling.csv", "missing.csv")]
    if action.choices:
        return "bogus" if hostile else draw(st.sampled_from([str(c) for c in action.choices]))
    if action.type is not None and getattr(action.type, "__name__", "") in ("int", "float", "positive_int"):
        return draw(st.sampled_from(NUMBERS if hostile else ["1", "2", "3"]))
    if action.dest in OUTPUT_DESTS:
        outs = [str(root / "out" / n) for n in ("a.csv", "b.md", "sub/c.json", "dir")]
        return draw(st.sampled_from(outs + inputs[:3] + [str(root / "inputs" / "link.csv"), str(root / "out")]))
    return draw(st.sampled_from(inputs + WORDS if hostile else inputs))


def _argv(draw, command: Sequence[str], parser: argparse.ArgumentParser, root: Path) -> Tuple[List[str], List[str]]:
    """(argv, the output paths it names)."""
    argv, outputs = list(command) + FIXED.get(" ".join(command), []), []
    for action in parser._actions:
        if action.dest in OUTPUT_DESTS and isinstance(action.default, str):
            outputs.append(str(root / "work" / action.default))  # written where the command runs when not given
        if isinstance(action, argparse._HelpAction) or set(action.option_strings) & LEFT_OUT:
            continue
        wanted = action.required or not action.option_strings
        if draw(st.integers(0, 9)) >= (9 if wanted else 3):  # a required one is left out now and then
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            argv.append(action.option_strings[0])
            continue
        count = 1 if action.nargs in (None, "?") else draw(st.integers(1, 2))
        values = [_value(draw, action, root) for _ in range(count)]
        if action.dest in OUTPUT_DESTS:
            outputs += values
        if action.option_strings:
            for v in values:  # '--opt=value': a value starting with '-' is still a value
                argv.append(f"{action.option_strings[0]}={v}")
        else:
            argv += ["--"] + values if any(v.startswith("-") for v in values) else values
    return argv, outputs


def _allowed(path: str, outputs: Sequence[str], root: Path, command: Sequence[str]) -> bool:
    roots = [Path(o) for o in outputs if o] + [Path(os.path.realpath(o)) for o in outputs if o]
    if command[0] == "study":
        roots.append(root / "study_out")
    p = Path(path)
    if any(p in Path(r).parents for r in roots):
        return True  # a folder made to hold an output
    for r in roots:
        if p == r or r in p.parents:
            return True
        if p.parent == r.parent and (p.name.startswith(f".{r.name}") or p.name.startswith(f"{r.name}.")):
            return True  # its provenance sidecar, claim and work files
    return False


def _without_loguru_sink_errors(text: str) -> str:
    """``text`` without loguru's reports of a sink that a previous test closed (pytest's captured stderr): loguru
    writes them with a traceback of its own, which says nothing about the command."""
    return re.sub(r"--- Logging error in Loguru Handler.*?--- End of logging error ---\n?", "", text, flags=re.S)


# ---------------------------------------------------------------------------------------------- the test
@pytest.mark.parametrize("command,parser", PARAMS)
def test_every_command_fails_clearly_and_writes_only_its_outputs(command, parser):
    scale = float(os.environ.get("LMMS_AC_FUZZ_SCALE", "1"))  # a deeper pass on demand, e.g. LMMS_AC_FUZZ_SCALE=10
    examples = max(1, int(MAX_EXAMPLES.get(" ".join(command), MAX_EXAMPLES["default"]) * scale))

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a command run is slow, the seeded case reproduces
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def one(data):
        root = _sandbox(_files(data.draw))
        try:
            argv, outputs = _argv(data.draw, command, parser, root)
            before = _snapshot(root)
            err, out = io.StringIO(), io.StringIO()
            cwd = os.getcwd()
            os.chdir(root / "work")
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                    try:
                        code = main(argv)
                    except SystemExit as exit_:  # argparse's usage errors
                        code = exit_.code
                    except AssertionError as guard:
                        if GUARD not in str(guard):
                            raise
                        code = 0  # stopped by the fast-test guard after the arguments were accepted
            finally:
                os.chdir(cwd)
            text = _without_loguru_sink_errors(err.getvalue())
            assert code in (0, 1, 2), f"{argv}: exit code {code}\n{text[-2000:]}"
            assert "Traceback" not in text, f"{argv}:\n{text[-2000:]}"
            if code == 2:  # main's "lmms-ac CMD: error: ..." or argparse's "...: error: ..."
                assert "error: " in text, f"{argv}: {text[-2000:]}"
            after = _snapshot(root)
            touched = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
            stray = [p for p in touched if not _allowed(p, outputs, root, command)]
            assert not stray, f"{argv} touched {stray}"
            assert (root / "outside" / "precious.txt").read_text() == "not yours" or any(
                os.path.realpath(o) == str(root / "outside" / "precious.txt") for o in outputs
            ), f"{argv} wrote through a link it was not given as an output"
        finally:
            shutil.rmtree(root, ignore_errors=True)

    one()


def test_the_fuzz_reaches_every_command_and_the_readers():
    names = {" ".join(c) for c, _ in COMMANDS}
    assert {"collect", "leaderboard", "robustness", "report", "fit", "study plan", "study run", "score-a"} <= names
    assert {"layers", "tasks", "zeroshot-tasks", "policy recommend", "plot pil"} <= names
    assert not names & {" ".join(c) for c in SKIPPED}


# ---------------------------------------------------------------------------------------------- the readers
CLEAR = (ValueError, KeyError, FileNotFoundError)  # what main prints as one "error:" line
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["id", "image", "conversations", "from", "value", "question", "prompt", "text", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
READER_FUZZ = settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def _read_with(reader, suffix: str, data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"file{suffix}"
        path.write_bytes(data)
        try:
            return reader(path)
        except CLEAR:
            return None


@READER_FUZZ
@given(
    doc=json_values,
    raw=st.binary(max_size=40),
    kind=st.sampled_from(["json", "raw", "cut"]),
    suffix=st.sampled_from([".json", ".jsonl", ".txt"]),
)
def test_prompt_and_study_files_fail_clearly(doc, raw, kind, suffix):
    import json

    from lmms_ac.layers.prompts import read_prompts_file
    from lmms_ac.study.spec import load_study

    text = json.dumps(doc).encode()
    data = {"json": text, "raw": raw, "cut": text[: len(text) // 2]}[kind]
    got = _read_with(read_prompts_file, suffix, data)
    assert got is None or all(isinstance(p, str) and p for p in got)
    _read_with(load_study, ".yaml", data)  # JSON is YAML: any mapping, list or scalar
    _read_with(load_study, ".yaml", b"name: x\nmodels: " + data)


turn = st.fixed_dictionaries({}, optional={"from": st.sampled_from(["gpt", "human", 1]), "value": json_values})
caption_record = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "image": st.one_of(st.just("a.jpg"), json_values),
        "conversations": st.one_of(st.lists(st.one_of(turn, json_values), max_size=3), json_values),
    },
)


@READER_FUZZ
@given(records=st.one_of(st.lists(caption_record, max_size=3), json_values), cut=st.booleans())
def test_caption_files_fail_clearly(records, cut):
    import json

    from lmms_ac.scores.alignment import read_llava_pretrain

    text = json.dumps(records).encode()
    got = _read_with(lambda p: read_llava_pretrain(str(p), "/images"), ".json", text[: len(text) // 2] if cut else text)
    assert got is None or all(isinstance(c.caption, str) for c in got)


def test_plot_pil_with_a_folder_as_its_array_fails_clearly(tmp_path, capsys):
    (tmp_path / "arr").mkdir()
    assert main(["plot", "pil", str(tmp_path / "arr"), "--out", str(tmp_path / "fig")]) == 2
    assert "error: " in capsys.readouterr().err
