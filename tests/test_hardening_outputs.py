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


def test_an_output_through_a_symlink_replaces_the_target_not_the_link(tmp_path):
    from lmms_ac.io import atomic_write_text
    from lmms_ac.results.output import sidecar, write_text_report

    target = tmp_path / "shared" / "table.csv"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "table.csv"
    link.symlink_to(target)
    with pytest.raises(OutputExistsError):
        atomic_write_text(link, "new")
    atomic_write_text(link, "new", overwrite=True)
    assert link.is_symlink() and target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == "0o640"
    write_text_report("report", link, {"command": "x"}, overwrite=True)
    assert link.is_symlink() and target.read_text() == "report" and sidecar(link).exists()
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "shared" / "new.csv")
    atomic_write_text(dangling, "fresh")
    assert dangling.is_symlink() and (tmp_path / "shared" / "new.csv").read_text() == "fresh"


def test_a_folder_given_as_an_output_file_is_a_clear_error(tmp_path, capsys):
    from lmms_ac.cli import main
    from lmms_ac.testing.results_fixture import write_study

    table, scores = write_study(tmp_path / "s")
    folder = tmp_path / "outdir"
    folder.mkdir()
    for argv in (
        ["leaderboard", str(table), "--scores", str(scores), "--out", str(folder)],
        ["leaderboard", str(table), "--scores", str(scores), "--out", str(folder), "--overwrite"],
        ["report", "--table", str(table), "--scores", str(scores), "--out", str(folder)],
        ["report", "--table", str(table), "--scores", str(scores), "--out", str(folder), "--overwrite"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"{folder} is a folder; give a file path for the output" in err, argv
    assert list(folder.iterdir()) == []


def test_a_table_deleted_with_its_sidecar_kept_is_written_again(tmp_path):
    import pandas as pd

    from lmms_ac.results.output import sidecar, write_csv

    out = tmp_path / "t.csv"
    df = pd.DataFrame({"a": [1, 2]})
    write_csv(df, out, {"command": "x"})
    out.unlink()  # the user deleted the table; its provenance describes nothing now
    write_csv(df.assign(a=[3, 4]), out, {"command": "y"})
    assert out.read_text().splitlines()[1] == "3" and json.loads(sidecar(out).read_text())["command"] == "y"
    with pytest.raises(OutputExistsError):  # an existing table is still never replaced silently
        write_csv(df, out, {"command": "z"})


def test_duplicate_rows_with_different_values_are_refused_identical_ones_collapse(tmp_path):
    import pandas as pd

    from lmms_ac.results.table import clean_scores, read_table
    from lmms_ac.testing.results_fixture import make_table

    table = make_table(benchmarks=["mme"], perturbations=["tokperm"])
    path = tmp_path / "same.csv"
    pd.concat([table, table.iloc[:4]]).to_csv(path, index=False)
    assert len(read_table(path)) == len(table)
    pasted = table.iloc[[0]].assign(value=table["value"].iloc[0] / 2)
    path = tmp_path / "dup.csv"
    pd.concat([table, pasted]).to_csv(path, index=False)
    v, m = table["variant"].iloc[0], table["metric"].iloc[0]
    with pytest.raises(ValueError, match=rf"1 row\(s\) given more than once with different values: {v} / mme / {m}: "):
        read_table(path)
    with pytest.raises(ValueError, match="keep the right one of each"):
        clean_scores(pd.concat([table, pasted]))  # a table built in Python is checked too


def test_a_table_of_only_perturbed_rows_is_a_clear_error(tmp_path, capsys):
    from lmms_ac.cli import main
    from lmms_ac.results.table import is_clean, resolve_metric
    from lmms_ac.testing.results_fixture import make_table

    table = make_table(benchmarks=["mme"], perturbations=["tokperm"])
    perturbed = table[~is_clean(table)]
    with pytest.raises(ValueError, match="task 'mme' has no usable rows here"):
        resolve_metric(perturbed[perturbed["task"] == "mme"], "mme")
    path = tmp_path / "perturbed.csv"
    perturbed.to_csv(path, index=False)
    assert main(["leaderboard", str(path)]) == 2
    assert "no clean (unperturbed) scores, only perturbed runs; run the clean tasks too" in capsys.readouterr().err


def test_spreadsheet_exports_neutralise_formulas_and_keep_numbers(tmp_path, capsys):
    import io

    import pandas as pd

    from lmms_ac.cli import main
    from lmms_ac.results.output import spreadsheet_csv
    from lmms_ac.results.table import read_table
    from lmms_ac.testing.results_fixture import make_table

    evil = {"clip-l14-336": '=HYPERLINK("http://x.example","open")', "dinov2-l": "@SUM(A1)", "mae-l": "-cmd|x"}
    table = make_table(benchmarks=["mme"], perturbations=["tokperm"])
    table["variant"] = table["variant"].replace(evil)
    path = tmp_path / "table.csv"
    path.write_text(table.to_csv(index=False))
    assert set(evil.values()) <= set(read_table(path)["variant"])  # the data file keeps every name exactly
    for argv, kept in (
        (["leaderboard", str(path)], "mme"),
        (["robustness", str(path), "--out", str(tmp_path / "drops.csv")], "drop_mean"),
    ):
        assert main(argv) == 0
        text = (tmp_path / "drops.csv").read_text() if "--out" in argv else capsys.readouterr().out
        board = pd.read_csv(io.StringIO(text))
        names = set(board["variant"])
        assert {"'" + v for v in evil.values()} <= names and not set(evil.values()) & names, argv
        assert pd.api.types.is_numeric_dtype(board[kept]), argv  # numbers stay numbers
    frame = pd.DataFrame({"name": ["-0.5", "+x", "ok", None], "drop": [-1.5, 2.0, -0.25, 0.0], "=c": [1, 2, 3, 4]})
    got = pd.read_csv(io.StringIO(spreadsheet_csv(frame)))
    assert list(got.columns) == ["name", "drop", "'=c"]
    assert got["name"].tolist()[:3] == ["-0.5", "'+x", "ok"]  # a number written as text is not a formula
    assert got["drop"].tolist() == [-1.5, 2.0, -0.25, 0.0]


def test_a_regenerated_folder_replaces_only_the_commands_own(tmp_path):
    from lmms_ac.io import check_replaceable

    mine = tmp_path / "lmms-lab__MME"
    mine.mkdir()
    (mine / "photos.zip").write_text("user data")
    check_replaceable(tmp_path / "missing", ["state.json"], "a saved dataset copy", overwrite=False)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        check_replaceable(mine, ["state.json"], "a saved dataset copy", overwrite=False)
    with pytest.raises(ValueError, match="is not a saved dataset copy .* so --overwrite will not delete it"):
        check_replaceable(mine, ["dataset_dict.json", "state.json"], "a saved dataset copy", overwrite=True)
    (mine / "state.json").write_text("{}")
    check_replaceable(mine, ["dataset_dict.json", "state.json"], "a saved dataset copy", overwrite=True)


def test_collect_checks_its_output_before_reading_results(tmp_path, capsys):
    from lmms_ac.cli import main

    (tmp_path / "table.csv").write_text("mine")
    assert main(["collect", str(tmp_path / "no-results"), "--out", str(tmp_path / "table.csv")]) == 2
    assert "table.csv already exists; choose another path or pass --overwrite" in capsys.readouterr().err
    assert main(["collect", str(tmp_path / "no-results"), "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file path for the output" in capsys.readouterr().err
    assert (tmp_path / "table.csv").read_text() == "mine"
