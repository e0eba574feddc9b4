"""A report is computed once: `lmms-ac report` and `study report` build one Analysis, and the leaderboard, the
robustness table, the law and the page all read from it (clean scores, the law fit and the robustness table are
each computed once; the leaderboard fits no law of its own)."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest

from lmms_ac.testing.results_fixture import write_study as write_results

COUNTED = {
    "clean_scores": "lmms_ac.results.table.clean_scores",
    "clean_scores ": "lmms_ac.report.leaderboard.clean_scores",  # its own import: counted apart
    "fit_law": "lmms_ac.law.fit.fit_law",
    "robustness_table": "lmms_ac.results.robustness_table.robustness_table",
    "law_predictions": "lmms_ac.law.fit.law_predictions",
}


@pytest.fixture
def calls(monkeypatch):
    import importlib

    counts: Counter = Counter()
    for name, target in COUNTED.items():
        module, attr = target.rsplit(".", 1)
        original = getattr(importlib.import_module(module), attr)

        def counting(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(target, counting)
    return counts


def test_lmms_ac_report_computes_each_quantity_once(tmp_path, calls):
    from lmms_ac.report import Options, build_report

    table, scores = write_results(tmp_path, benchmarks=["mme", "textvqa_val"], perturbations=["tokperm"])
    html = build_report(table, scores, tmp_path / "r.html", options=Options(policy_runs=5)).read_text()
    assert "Leaderboard" in html and "law-r2" in html
    assert calls == Counter({"clean_scores": 1, "fit_law": 1, "robustness_table": 1}), calls


@pytest.mark.slow
def test_study_report_computes_each_quantity_once(tmp_path, calls, monkeypatch):
    from study_fakes import cli_command, install_fakes, study_data, write_study

    from lmms_ac.study.report import build_study_report
    from lmms_ac.study.spec import load_study

    import lmms_ac.results.output as output

    exports = []
    spreadsheet_csv = output.spreadsheet_csv
    monkeypatch.setattr(output, "spreadsheet_csv", lambda df: exports.append(list(df.columns)) or spreadsheet_csv(df))
    bindir = install_fakes(tmp_path / "bin")
    data = study_data(tmp_path)
    data["report"] = {
        "outputs": ["table", "scores", "leaderboard", "fit", "recommend", "robustness", "html"],
        "recommend_benchmark": "mme",
    }
    path = write_study(tmp_path, data)
    res = subprocess.run(cli_command(bindir, "study", "run", str(path)), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = build_study_report(load_study(path), printer=lambda _line: None)
    names = {p.rsplit("/", 1)[-1] for p in summary["written"]}
    assert {"table.csv", "leaderboard.csv", "report.html"} <= names, summary
    assert {"fit.json", "recommend.json", "ac.csv"} <= names, summary
    # the exports meant for spreadsheets (leaderboard, fit coefficients and predictions) neutralise formulas
    assert sum("variant" in cols or "setting" in cols for cols in exports) >= 2, exports
    assert calls == Counter({"clean_scores": 1, "fit_law": 1, "robustness_table": 1}), calls
