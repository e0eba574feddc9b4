"""``lmms-ac score-c`` / ``make-ocr-pairs`` and the shared scores CSV (append, skip, force)."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmms_ac.cli.scores import register
from lmms_ac.scores.store import SCORE_COLUMNS, ScoreValue, append_score, read_scores, record_score
from lmms_ac.vision import FAMILIES

from lmms_ac.testing.spair import PixelPatchEncoder, write_photo_fixture


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spair_cli")
    write_photo_fixture(root, photos=(("astronaut", "person"), ("coffee", "cup")))
    return root


@pytest.fixture
def testpix():
    """Register a 'testpix' family (the real loading path) and count how often it is built."""
    built = []

    def factory(spec, **kwargs):
        built.append(str(spec))
        return PixelPatchEncoder(patch=int(spec.opts.get("patch", 8)))

    snap = FAMILIES.snapshot()
    FAMILIES.register("testpix", factory)
    yield built
    FAMILIES.restore(snap)


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="lmms-ac")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_score_c_appends_skips_and_forces(photo_root, tmp_path, testpix):
    out = tmp_path / "scores.csv"
    base = ["score-c", "--vision", "testpix:pix", "--spair", str(photo_root), "--out", str(out), "--device", "cpu"]
    assert cli(*base, "--variant", "v1") == 0
    rows = read_scores(out)
    assert len(rows) == 1 and testpix == ["testpix:pix"]
    row = rows[0]
    assert list(row)[: len(SCORE_COLUMNS)] == SCORE_COLUMNS
    key = (row["variant"], row["vision"], row["score"], row["method"], row["split"])
    assert key == ("v1", "testpix:pix", "C", "argmax", "test")
    assert float(row["value"]) >= 95.0 and int(row["n"]) == 10
    prov, details = json.loads(row["provenance"]), json.loads(row["details"])
    assert prov["config_hash"] == row["config_hash"] and "torch_version" in prov
    assert set(details["per_category"]) == {"person", "cup"} and details["encoder_passes"] == 12
    assert details["config"]["alpha"] == 0.1

    # same config again: skipped without even loading the encoder
    assert cli(*base, "--variant", "v1") == 0
    assert len(read_scores(out)) == 1 and len(testpix) == 1
    # another method / variant: appended, earlier rows kept
    assert cli(*base, "--variant", "v1", "--method", "window_softargmax") == 0
    assert cli(*base) == 0  # variant defaults to the vision spec
    rows = read_scores(out)
    expected = [("v1", "argmax"), ("v1", "window_softargmax"), ("testpix:pix", "argmax")]
    assert [(r["variant"], r["method"]) for r in rows] == expected
    assert len({r["config_hash"] for r in rows}) == 2  # variant is part of the key, not the config
    # --limit changes the config; --force recomputes in place
    assert cli(*base, "--variant", "v1", "--limit", "4") == 0
    first_time = read_scores(out)[0]["time"]
    assert cli(*base, "--variant", "v1", "--force") == 0
    rows = read_scores(out)
    assert (
        len(rows) == 4 and sum(r["variant"] == "v1" and r["method"] == "argmax" and r["n"] == "10" for r in rows) == 1
    )
    assert rows[-1]["time"] >= first_time


def test_score_c_ocr_row_and_combination(photo_root, tmp_path, testpix):
    out = tmp_path / "scores.csv"
    assert (
        cli(
            "score-c",
            "--vision",
            "testpix:a",
            "--vision",
            "testpix:b",
            "--ocr",
            "--ocr-n",
            "8",
            "--spair",
            str(photo_root),
            "--limit",
            "2",
            "--out",
            str(out),
            "--variant",
            "combo",
        )
        == 0
    )
    rows = read_scores(out)
    assert [r["score"] for r in rows] == ["C", "C_ocr"]
    assert rows[1]["vision"] == "testpix:a+testpix:b" and rows[1]["split"] == "generated"
    ocr_details = json.loads(rows[1]["details"])
    assert ocr_details["config"]["n"] == 8 and ocr_details["config"]["generator"].endswith("ocr_pairs")
    assert "pillow" in ocr_details and int(rows[1]["n"]) == 8
    assert set(ocr_details["baselines"]) == {"chance", "same_position"}  # references beside C_ocr
    assert testpix == ["testpix:a", "testpix:b"]  # loaded once for both scores


def test_score_c_user_errors(photo_root, tmp_path):
    with pytest.raises(ValueError, match="nothing to score"):
        cli("score-c", "--vision", "testpix:x", "--out", str(tmp_path / "s.csv"))
    with pytest.raises(FileNotFoundError):
        cli("score-c", "--vision", "testpix:x", "--spair", str(tmp_path / "nope"), "--out", str(tmp_path / "s.csv"))
    with pytest.raises(ValueError, match="did you mean"):
        cli(
            "score-c",
            "--vision",
            "testpix:x",
            "--spair",
            str(photo_root),
            "--split",
            "tst",
            "--out",
            str(tmp_path / "s.csv"),
        )


def test_store_keeps_foreign_rows_and_refuses_duplicates(tmp_path):
    out = tmp_path / "scores.csv"
    out.write_text("variant,vision,score,value,n,config_hash,extra_col\nm1,clip,A,-2.1,100,abc,kept\n")
    row = record_score(
        out,
        variant="m1",
        vision="clip",
        score="C",
        config={"k": 1},
        compute=lambda: ScoreValue(42.0, 3, {"x": 1}),
        method="argmax",
        split="test",
    )
    assert row["skipped"] is False
    rows = read_scores(out)
    assert [r["score"] for r in rows] == ["A", "C"] and rows[0]["extra_col"] == "kept"
    calls = []
    again = record_score(
        out,
        variant="m1",
        vision="clip",
        score="C",
        config={"k": 1},
        compute=lambda: calls.append(1) or ScoreValue(0.0, 0),
    )
    assert again["skipped"] is True and calls == [] and float(again["value"]) == 42.0
    with pytest.raises(FileExistsError):
        append_score(out, {**read_scores(out)[1]})
    with open(out, newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a scores CSV"):
        read_scores(bad)


def test_make_ocr_pairs_cli(tmp_path):
    root = tmp_path / "ocr"
    assert cli("make-ocr-pairs", "--to", str(root), "--n", "6", "--seed", "3") == 0
    assert len(list((root / "PairAnnotation/test").glob("*.json"))) == 6
    with pytest.raises(FileExistsError):
        cli("make-ocr-pairs", "--to", str(root), "--n", "6")


@pytest.mark.slow
def test_cli_module_imports_no_torch():
    code = "import sys, lmms_ac.cli.scores, lmms_ac.scores.store; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
