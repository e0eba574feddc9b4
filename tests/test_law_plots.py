"""Figures: PNG + SVG written atomically, never over existing files unless asked."""

from __future__ import annotations

import numpy as np
import pytest

from lmms_ac.io import OutputExistsError
from lmms_ac.law.data import load_example
from lmms_ac.law.fit import fit_law
from lmms_ac.law.plots import plot_law_surface, plot_patch_info_loss, plot_pred_vs_actual, plot_recall_curves
from lmms_ac.law.policy import simulate

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def report():
    return fit_law(load_example(benchmarks=["mme", "textvqa_val"]), normalize="minmax", random_draws=3)


def test_law_figures(report, tmp_path):
    paths = plot_law_surface(report.benchmarks["mme"], tmp_path / "surface")
    assert [p.name for p in paths] == ["surface.png", "surface.svg"]
    assert paths[0].read_bytes().startswith(PNG) and b"<svg" in paths[1].read_bytes()
    paths = plot_pred_vs_actual(list(report.benchmarks.values()), tmp_path / "pva", formats=["png"])
    assert [p.name for p in paths] == ["pva.png"]
    with pytest.raises(OutputExistsError):
        plot_pred_vs_actual(list(report.benchmarks.values()), tmp_path / "pva", formats=["png"])
    plot_pred_vs_actual(list(report.benchmarks.values()), tmp_path / "pva", formats=["png"], overwrite=True)
    with pytest.raises(ValueError, match="unsupported figure format"):
        plot_pred_vs_actual(list(report.benchmarks.values()), tmp_path / "x", formats=["jpg"])


def test_recall_and_pil_figures(tmp_path):
    rep = simulate(load_example(benchmarks=["mme"]), ["region", "random"], runs=50)
    assert len(plot_recall_curves(rep, tmp_path / "recall")) == 2
    pil = np.random.default_rng(0).random((4, 4))
    paths = plot_patch_info_loss(pil, tmp_path / "pil")
    assert all(p.stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match="M x M"):
        plot_patch_info_loss(np.zeros((2, 3)), tmp_path / "bad")


def test_cli_plots(tmp_path, capsys):
    from lmms_ac.cli import main

    arr = tmp_path / "pil.npy"
    np.save(arr, np.eye(3))
    assert main(["plot", "pil", str(arr), "--out", str(tmp_path / "heat")]) == 0
    assert (tmp_path / "heat.png").exists() and (tmp_path / "heat.svg").exists()
    assert main(["plot", "pil", str(arr), "--out", str(tmp_path / "heat")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (
        main(
            [
                "fit",
                "--example",
                "law-v1",
                "--benchmarks",
                "mme",
                "--random-draws",
                "2",
                "--plot",
                str(tmp_path / "figs"),
                "--formats",
                "png",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["law_pred_vs_actual.png", "law_surface_mme.png"]
    assert (
        main(
            [
                "plot",
                "policy",
                "--example",
                "law-v1",
                "--benchmarks",
                "mme",
                "--runs",
                "20",
                "--out-dir",
                str(tmp_path / "pol"),
                "--formats",
                "svg",
            ]
        )
        == 0
    )
    assert (tmp_path / "pol" / "policy_recall3.svg").exists()
