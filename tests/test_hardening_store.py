"""Issue 9, items 4, 8, 9, 10: stored scores are never silently damaged, work starts only when the
output is writable, a concurrent run of the same score skips, atomic writes keep the file mode."""

from __future__ import annotations

import argparse
import os
import stat
import threading
from pathlib import Path

import pandas as pd
import pytest

from lmms_ac.io import atomic_write_text, check_writable, current_umask
from lmms_ac.results.table import TABLE_COLUMNS, read_table
from lmms_ac.scores.store import ScoreValue, append_score, claim_row, read_scores, record_score


def _record(out, variant="m1", score="C", value=0.5, **kw):
    return record_score(
        out,
        variant=variant,
        vision="clip:x",
        score=score,
        config={"k": 1},
        compute=lambda: ScoreValue(value, 10, {"per": [1, 2]}),
        **kw,
    )


@pytest.fixture()
def store(tmp_path) -> Path:
    out = tmp_path / "scores.csv"
    _record(out, "m1")
    _record(out, "m2", value=0.25)
    return out


# ------------------------------------------------------------------ item 4: the scores store
def test_truncated_last_row_is_refused_with_its_line_and_never_rewritten(store):
    text = store.read_text()
    cut = text[: text.rindex("0.25") + 3]  # the last row cut inside its value: "0.2"
    store.write_text(cut)
    with pytest.raises(ValueError, match=r"scores.csv, line 3: .*cut short.*Nothing was written"):
        read_scores(store)
    with pytest.raises(ValueError, match="line 3"):
        _record(store, "m3")  # the next append refuses instead of rewriting the cut row
    assert store.read_text() == cut  # byte for byte


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda t: t.replace("m2,clip:x,C,0.25,", "m2,clip:x,C,abc,"), "column 'value': 'abc' is not a number"),
        (lambda t: t.replace("m2,clip:x,C,0.25,10,", "m2,clip:x,C,0.25,ten,"), "column 'n': 'ten' is not an integer"),
        (lambda t: t.replace(t.splitlines()[2].split(",")[7], ""), "column 'config_hash': empty"),
        (lambda t: t.rstrip("\n"), "does not end with a newline"),
        (lambda t: t + "m3,clip:x,C,0.1\n", "4 field\\(s\\) where the header has 11"),
        (lambda t: t.replace("variant,", "variantt,", 1), "not a scores CSV \\(missing column\\(s\\) variant\\)"),
        (lambda t: "", "is empty"),
    ],
)
def test_every_damage_names_the_line(store, damage, message):
    store.write_text(damage(store.read_text()))
    before = store.read_bytes()
    with pytest.raises(ValueError, match=message):
        read_scores(store)
    with pytest.raises(ValueError):
        append_score(store, {"variant": "m9", "score": "C", "value": 1.0, "config_hash": "h"})
    assert store.read_bytes() == before


def test_cut_inside_a_json_cell_is_refused(store):
    text = store.read_text()
    store.write_text(text[: text.rindex('"per"') + 3] + "\n")  # quoted details cell cut, newline kept
    with pytest.raises(ValueError, match="line 3"):
        read_scores(store)


def test_clean_store_round_trips(store):
    rows = read_scores(store)
    assert [r["variant"] for r in rows] == ["m1", "m2"] and float(rows[1]["value"]) == 0.25


# ------------------------------------------------------------------ item 4: the tidy table
def _table(tmp_path) -> Path:
    rows = [
        {
            "variant": "v",
            "task": "mme",
            "metric": "mme_perception_score",
            "value": 1000.5 + i,
            "stderr": "N/A",
            "n": 12,
            "perturbation": "none",
            "severity": "",
            "seed": i,  # one row per key: seeds of a clean run
            "base_task": "mme",
            "lmms_eval_version": "0.7.3",
            "config_hash": f"abc{i}",
            "time": "2026-01-01T00:00:00",
            "source": "r.json",
        }
        for i in range(3)
    ]
    path = tmp_path / "table.csv"
    pd.DataFrame(rows, columns=TABLE_COLUMNS).to_csv(path, index=False)
    return path


def test_table_reads_clean_and_refuses_damage(tmp_path):
    path = _table(tmp_path)
    assert read_table(path)["value"].tolist() == [1000.5, 1001.5, 1002.5]
    text = path.read_text()
    path.write_text(text[: text.rindex("1002.5") + 4])  # cut inside the last row's value
    with pytest.raises(ValueError, match=r"table.csv, line 4: .*lmms-ac collect"):
        read_table(path)
    path.write_text(text.replace("abc1", ""))
    with pytest.raises(ValueError, match="line 3: column 'config_hash': empty"):
        read_table(path)
    path.write_text(text.replace("1001.5", "1001.5x"))
    with pytest.raises(ValueError, match="line 3: column 'value'"):
        read_table(path)


# ------------------------------------------------------------------ item 8: writable before work
def _cli(*argv: str) -> int:
    from lmms_ac.cli.scores import register

    parser = argparse.ArgumentParser(prog="lmms-ac")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_unwritable_out_fails_before_any_work(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    calls = []
    with pytest.raises(ValueError, match="is a file, not a directory"):
        record_score(
            blocker / "scores.csv",
            variant="v",
            vision="s",
            score="C",
            config={},
            compute=lambda: calls.append(1) or ScoreValue(1.0, 1),
        )
    assert calls == []
    # through the command: the encoder is never loaded (an unknown family would fail first otherwise)
    with pytest.raises(ValueError, match="is a file, not a directory"):
        _cli("score-c", "--vision", "nosuchfamily:x", "--ocr", "--out", str(blocker / "scores.csv"))
    with pytest.raises(ValueError, match="is a file, not a directory"):
        _cli("make-ocr-pairs", "--to", str(blocker / "pairs"), "--n", "2")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_read_only_directory_fails_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ValueError, match="not writable"):
            check_writable(ro / "scores.csv")
    finally:
        ro.chmod(0o755)


def test_damaged_store_is_refused_before_computing(store):
    store.write_text(store.read_text()[:-5])
    calls = []
    with pytest.raises(ValueError, match="line 3"):
        record_score(
            store, variant="new", vision="s", score="C", config={}, compute=lambda: calls.append(1) or ScoreValue(1, 1)
        )
    assert calls == []


# ------------------------------------------------------------------ item 9: concurrent runs claim
def test_concurrent_run_of_the_same_score_skips(tmp_path):
    out = tmp_path / "scores.csv"
    started, release = threading.Event(), threading.Event()
    results = {}

    def slow() -> ScoreValue:
        started.set()
        assert release.wait(30)
        return ScoreValue(0.75, 5)

    first = threading.Thread(
        target=lambda: results.setdefault(
            "first", record_score(out, variant="v", vision="s", score="C", config={"a": 1}, compute=slow)
        )
    )
    first.start()
    assert started.wait(30)
    calls = []
    second = record_score(
        out, variant="v", vision="s", score="C", config={"a": 1}, compute=lambda: calls.append(1) or ScoreValue(0.0, 1)
    )
    other = record_score(
        out,
        variant="v",
        vision="s",
        score="C",
        config={"a": 2},  # another row: not blocked
        compute=lambda: ScoreValue(0.5, 1),
    )
    release.set()
    first.join(30)
    assert calls == [] and second["skipped"] and "pid" in second["in_progress"]
    assert other["skipped"] is False
    assert sorted(float(r["value"]) for r in read_scores(out)) == [0.5, 0.75]
    assert not list(tmp_path.glob("*.claim"))  # claims are removed
    third = record_score(out, variant="v", vision="s", score="C", config={"a": 1}, compute=lambda: calls.append(1))
    assert third["skipped"] and float(third["value"]) == 0.75 and calls == []


def test_claim_is_exclusive_and_released(tmp_path):
    out = tmp_path / "scores.csv"
    with claim_row(out, "v", "C", "h") as mine:
        assert mine is None
        with claim_row(out, "v", "C", "h") as theirs:
            assert theirs is not None and str(os.getpid()) in theirs
        with claim_row(out, "v", "A", "h") as different:
            assert different is None
    with claim_row(out, "v", "C", "h") as again:
        assert again is None


# ------------------------------------------------------------------ item 10: file modes
def test_atomic_replace_keeps_the_mode(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old")
    path.chmod(0o644)
    atomic_write_text(path, "new", overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_text() == "new"
    path.chmod(0o640)
    atomic_write_text(path, "newer", overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_new_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    atomic_write_text(tmp_path / "b.txt", "x")
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o666 & ~old


def test_score_store_keeps_its_mode_across_appends(tmp_path):
    out = tmp_path / "scores.csv"
    _record(out, "m1")
    out.chmod(0o644)
    _record(out, "m2")
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_synthesize_checks_its_folder_before_any_work(tmp_path, capsys):
    from lmms_ac.cli import main

    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main(["synthesize", "mme", "--to", str(blocker / "synthetic"), "--overwrite"]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert main(["mirror", "mme", "--to", str(blocker / "mirror"), "--overwrite"]) == 2  # before the task index
    assert "is a file, not a directory" in capsys.readouterr().err


def test_a_failed_final_write_reports_the_computed_value(tmp_path, monkeypatch):
    import lmms_ac.scores.store as store

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "atomic_write_text", full_disk)
    with pytest.raises(ValueError, match=r"No space left on device.*is 0\.5 \(n=10"):
        _record(tmp_path / "scores.csv")
