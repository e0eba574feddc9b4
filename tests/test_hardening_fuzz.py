"""Issue 9, "Also": fuzzing the CSV readers (scores store, tidy table, A/C and wide law tables) and
the spec/perturbation parsers. Every malformed input ends in a clear error (ValueError/KeyError,
which the command line prints without a traceback), never another exception, and a file cut short
is never read as a shorter valid one with a damaged last row."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lmms_ac.results.table import TABLE_COLUMNS, read_table, table_to_csv  # noqa: E402
from lmms_ac.scores.store import SCORE_COLUMNS, _to_csv, read_scores, read_scores_frame  # noqa: E402

CLEAR = (ValueError, KeyError)  # what lmms_ac.cli.main reports as one line (exit 2)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
score_row = st.fixed_dictionaries(
    {
        "variant": text.filter(str.strip),
        "vision": text,
        "score": st.sampled_from(["A", "C", "C_ocr"]),
        "value": finite.map(repr),
        "n": st.integers(0, 10**6),
        "method": text,
        "split": text,
        "config_hash": st.text("0123456789abcdef", min_size=16, max_size=16),
        "time": text,
        "provenance": st.dictionaries(text, text, max_size=3),
        "details": st.dictionaries(text, finite, max_size=3),
    }
)


def _tmp(content: bytes) -> Path:
    fd = tempfile.NamedTemporaryFile(suffix=".csv", delete=False)
    fd.write(content)
    fd.close()
    return Path(fd.name)


def _serialise(rows):
    import json

    return _to_csv(
        [{k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in r.items()} for r in rows],
        SCORE_COLUMNS,
    )


@FUZZ
def _read_cut(full: bytes, reader, data):
    """Read ``full`` and a copy cut at a drawn byte; (cut, whole), or None when the cut copy was refused
    with a clear error (the uncut file must always read)."""
    cut = data.draw(st.integers(0, len(full) - 1))
    path, whole_path = _tmp(full[:cut]), _tmp(full)
    whole = None
    try:
        whole = reader(whole_path)
        return reader(path), whole
    except CLEAR:
        assert whole is not None
        return None
    finally:
        path.unlink()
        whole_path.unlink()


@given(rows=st.lists(score_row, min_size=1, max_size=4), data=st.data())
def test_store_cut_anywhere_is_an_error_or_an_exact_prefix(rows, data):
    read = _read_cut(_serialise(rows).encode("utf-8"), read_scores, data)
    if read is None:
        return
    got, whole = read
    assert got == whole[: len(got)]  # every row returned is whole; a cut row is never returned


@FUZZ
@given(rows=st.lists(score_row, min_size=1, max_size=3), data=st.data())
def test_store_with_random_edits_never_raises_anything_else(rows, data):
    full = _serialise(rows)
    pos = data.draw(st.integers(0, len(full)))
    edit = data.draw(st.sampled_from([",", '"', "\n", "\r", "x", "", "\x00", "\ufeff", "é"]))
    drop = data.draw(st.integers(0, 3))
    path = _tmp((full[:pos] + edit + full[pos + drop :]).encode("utf-8"))
    try:
        for row in read_scores(path):  # when it reads, every row is of the right shape
            float(row["value"])
            assert row["config_hash"].strip()
        read_scores_frame(path)
    except CLEAR:
        pass
    finally:
        path.unlink()


@FUZZ
@given(blob=st.binary(max_size=300))
def test_readers_on_arbitrary_bytes(blob):
    path = _tmp(blob)
    try:
        for reader in (read_scores, read_table, read_scores_frame):
            try:
                reader(path)
            except CLEAR:
                pass
    finally:
        path.unlink()


table_row = st.fixed_dictionaries(
    {
        "variant": text.filter(str.strip),
        "task": st.sampled_from(["mme", "seed", "mme_tokperm_s2"]),
        "metric": st.sampled_from(["mme_perception_score", "seed_image"]),
        "value": finite,
        "stderr": finite,
        "n": st.integers(1, 5000),
        "perturbation": st.sampled_from(["none", "tokperm"]),
        "severity": st.just(""),
        "seed": st.one_of(st.just(""), st.integers(0, 9)),
        "base_task": st.just("mme"),
        "lmms_eval_version": st.just("0.7.3"),
        "config_hash": st.text("0123456789abcdef", min_size=16, max_size=16),
        "time": st.just("2026-01-01T00:00:00"),
        "source": text,
    }
)


@FUZZ
@given(
    # one row per key: the same key twice with different values is refused (test_hardening_outputs.py)
    rows=st.lists(
        table_row,
        min_size=1,
        max_size=4,
        unique_by=lambda r: (r["variant"], r["task"], r["metric"], r["perturbation"], r["severity"], r["seed"]),
    ),
    data=st.data(),
)
def test_table_cut_anywhere_is_an_error_or_an_exact_prefix(rows, data):
    read = _read_cut(table_to_csv(pd.DataFrame(rows, columns=TABLE_COLUMNS)).encode("utf-8"), read_table, data)
    if read is None:
        return
    got, whole = read
    pd.testing.assert_frame_equal(got, whole.iloc[: len(got)].reset_index(drop=True))


@FUZZ
@given(
    cells=st.lists(
        st.lists(st.one_of(text, finite.map(str), st.just("")), min_size=1, max_size=5), min_size=1, max_size=5
    ),
    header=st.lists(st.sampled_from(["setting", "variant", "A", "C", "mme", "seed", "x"]), min_size=1, max_size=5),
)
def test_law_tables_fail_clearly(cells, header):
    from lmms_ac.law.data import from_wide, read_ac_scores

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(cells)
    path = _tmp(buf.getvalue().encode("utf-8"))
    try:
        try:
            read_ac_scores(path)
        except CLEAR:
            pass
        try:
            from_wide(
                pd.read_csv(path), setting_col="setting", a_col="A", c_col="C", benchmarks=["mme"], source=str(path)
            )
        except CLEAR:
            pass
    finally:
        path.unlink()


@settings(max_examples=300, deadline=None)
@given(
    spec=st.one_of(
        st.text(max_size=40), st.from_regex(r"[a-z0-9]{0,8}:[a-z/._-]{0,12}(\?[a-z=&0-9-]{0,15})?", fullmatch=True)
    )
)
def test_spec_parser_fails_clearly(spec):
    from lmms_ac.vision import FAMILIES
    from lmms_ac.vision.spec import parse_spec

    try:
        parse_spec(spec, set(FAMILIES.names()))
    except CLEAR:
        pass


@settings(max_examples=300, deadline=None)
@given(
    form=st.one_of(
        st.text(max_size=30), st.from_regex(r"[a-z_]{2,16}[0-9]{0,4}(_[a-z][0-9]{1,4}){0,3}", fullmatch=True)
    )
)
def test_perturbation_parser_fails_clearly(form):
    from lmms_ac.robustness.grammar import parse_perturbation

    try:
        p = parse_perturbation(form)
    except CLEAR:
        return
    assert p.to_string() == form or parse_perturbation(p.to_string()) == p  # what it reads, it can write back
