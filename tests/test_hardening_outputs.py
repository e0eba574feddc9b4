"""Issue 20, part A: nothing of the user's is deleted or replaced by an output.

``--overwrite`` empties only a folder the same command made (its marker) and holding only what that command
wrote; a symlinked output is written through; a folder given as an output file is a clear error."""

from __future__ import annotations

import json

import pytest

from lmms_ac.io import OUTPUT_MARKER, OutputExistsError, prepare_output_dir, seal_output_dir


def test_demo_overwrite_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    from lmms_ac.cli import main

    results = tmp_path / "results"
    results.mkdir()
    (results / "thesis.tex").write_text("years of work")
    assert main(["demo", "--out", str(results), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lmms-ac demo: error:") and "was not made by `lmms-ac demo`" in err
    assert "choose a new or empty folder" in err
    assert (results / "thesis.tex").read_text() == "years of work" and not (results / OUTPUT_MARKER).exists()
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert main(["demo", "--out", str(afile), "--overwrite"]) == 2
    assert "is not a folder" in capsys.readouterr().err and afile.read_text() == "x"


def test_overwrite_replaces_only_what_the_command_wrote(tmp_path):
    out = tmp_path / "demo"
    assert prepare_output_dir(out, "demo") == out and json.loads((out / OUTPUT_MARKER).read_text())["command"] == "demo"
    (out / "ckpt").mkdir()
    (out / "ckpt" / "w.bin").write_text("w")
    (out / "report.html").write_text("r")
    # a run that stopped early (no record): the folder is all its own
    with pytest.raises(OutputExistsError, match="pass --overwrite to replace it"):
        prepare_output_dir(out, "demo")
    prepare_output_dir(out, "demo", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER]
    # a finished run records what it wrote; something added later is never deleted
    (out / "report.html").write_text("r")
    seal_output_dir(out, "demo")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="holds 'notes.txt', which `lmms-ac demo` did not write"):
        prepare_output_dir(out, "demo", overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.html").exists()
    (out / "notes.txt").unlink()
    prepare_output_dir(out, "demo", overwrite=True)
    assert not (out / "report.html").exists()
    # another command's folder is not this command's to delete
    with pytest.raises(OutputExistsError, match="was not made by `lmms-ac other`"):
        (out / "x").write_text("x")
        prepare_output_dir(out, "other", overwrite=True)
    # an empty folder is used as it is
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_output_dir(empty, "demo") == empty


def test_overwrite_through_a_symlink_keeps_the_link_and_what_it_points_at(tmp_path):
    real = tmp_path / "real"
    prepare_output_dir(real, "demo")
    (real / "sub").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (real / "linked").symlink_to(outside)  # a link the run made: removed as a link, its target untouched
    link = tmp_path / "link"
    link.symlink_to(real)
    prepare_output_dir(link, "demo", overwrite=True)
    assert link.is_symlink() and real.is_dir() and sorted(p.name for p in real.iterdir()) == [OUTPUT_MARKER]
    assert (outside / "keep").read_text() == "keep"
