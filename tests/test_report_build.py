"""lmms-ac report: the page holds every section, computed by the project's own functions, and needs no network."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from importlib import resources
from typing import Dict, List, Optional
from urllib.parse import unquote

import pandas as pd
import pytest

from lmms_ac.report import Options, build_report
from lmms_ac.testing.results_fixture import CANDIDATES, TRAINED, score_rows, write_study

SECTIONS = ["leaderboard", "law", "policy", "robustness", "maps", "provenance"]


class Page(HTMLParser):
    """Just enough structure to check the page: elements by id, tables' rows, svgs, links, scripts."""

    def __init__(self, html: str):
        super().__init__()
        self.ids: List[str] = []
        self.tables: Dict[str, List[List[str]]] = {}
        self.headers: Dict[str, List[str]] = {}
        self.links: List[Dict[str, str]] = []
        self.scripts: List[Dict[str, str]] = []
        self.svgs = 0
        self.sections: Dict[str, str] = {}  # section id -> its text
        self._table: Optional[str] = None
        self._cell: Optional[List[str]] = None
        self._in_head = False
        self._section: Optional[str] = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "section" and a.get("id"):
            self._section = a["id"]
            self.sections[self._section] = ""
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table], self.headers[self._table] = [], []
        if tag == "thead":
            self._in_head = True
        if tag == "tbody":
            self._in_head = False
        if tag == "tr" and self._table and not self._in_head:
            self.tables[self._table].append([])
        if tag in ("td", "th") and self._table:
            self._cell = []
        if tag == "a":
            self.links.append(a)
        if tag == "script":
            self.scripts.append(a)
        if tag == "svg":
            self.svgs += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table is not None and self._cell is not None:
            text = "".join(self._cell).strip()
            if self._in_head:
                self.headers[self._table].append(text)
            else:
                self.tables[self._table][-1].append(text)
            self._cell = None
        if tag == "table":
            self._table = None
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._section:
            self.sections[self._section] += data


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    table, scores = write_study(root, benchmarks=["mme", "textvqa_val"], perturbations=["tokperm", "pdrop_salient30"])
    out = build_report(table, scores, root / "report.html", options=Options(policy_runs=40))
    return {"table": table, "scores": scores, "html": out.read_text(encoding="utf-8"), "out": out}


@pytest.fixture(scope="module")
def page(study) -> Page:
    return Page(study["html"])


def test_every_section_is_rendered_with_its_data(study, page):
    for s in SECTIONS:
        assert s in page.sections, f"section {s} missing"
        assert "Nothing to show yet" not in page.sections[s], f"section {s} should have data: {page.sections[s][:300]}"
    board = page.tables["leaderboard-all"]
    assert len(board) == len(TRAINED) + len(CANDIDATES)
    head = page.headers["leaderboard-all"]
    assert head[:4] == ["rank", "variant", "average", "n"]
    assert {"mme", "mme law", "textvqa_val law", "A", "C", "drop tokperm", "drop pdrop_salient30"} <= set(head)
    assert not any(h.startswith("drop tokgroup") for h in head)  # probe maps are drawn, not columns
    # the law: the R² table has every model, surfaces per benchmark + predicted vs actual
    assert page.headers["law-r2"][2:] == [
        "random linear",
        "random poly2",
        "A linear",
        "A poly2",
        "C linear",
        "C poly2",
        "AC linear",
        "AC poly2",
    ]
    assert [r[0] for r in page.tables["law-r2"]][:2] == ["mme", "textvqa_val"]
    for t in ("law-r2_loo", "law-spearman", "law-spearman_loo", "law-predictions"):
        assert page.tables[t], t
    # policy: a recommendation naming an untrained candidate, recall tables per policy
    assert re.search(r"train next\s*(" + "|".join(map(re.escape, CANDIDATES)) + ")", page.sections["policy"])
    from lmms_ac.report.sections import PAGE_POLICIES

    assert page.headers["policy-anytime-3"] == ["budget", *PAGE_POLICIES]  # no prior: it would see the same settings
    assert page.tables["policy-evaluate"] and page.tables["policy-coverage"]
    # robustness table and the patch-information-loss maps of the two probed variants
    assert len(page.tables["robustness-average"]) == len(TRAINED) * 2
    assert page.sections["maps"].count("patch information loss (2x2)") == 2
    # figures: 2 surfaces + pred-vs-actual + 2 recall + 2 heat maps + 2 PIL maps
    assert page.svgs == 9
    assert len(page.ids) == len(set(page.ids)), "duplicate element ids (inline SVGs must be prefixed)"


def test_page_needs_no_network(study, page):
    html = study["html"]
    assert not re.search(r"""(?:src|href|action|poster|srcset)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "@import" not in html and "<link" not in html and "<iframe" not in html
    assert not re.search(r"<!DOCTYPE svg|<\?xml|\.dtd", html)
    assert all("src" not in s for s in page.scripts), "scripts are inlined"
    # every http(s) string left is an XML namespace name, which browsers never fetch
    for m in re.finditer(r"https?://[^\s\"'<>)]+", html):
        before = html[max(0, m.start() - 16) : m.start()]
        assert re.search(r"xmlns(:\w+)?=\"$", before), f"unexpected URL {m.group(0)} after {before!r}"


def test_csv_download_is_the_leaderboard(study, page):
    from lmms_ac.law.data import read_ac_scores
    from lmms_ac.report.leaderboard import leaderboard
    from lmms_ac.results.table import read_table

    link = next(a for a in page.links if a.get("download") == "leaderboard.csv")
    head, data = link["href"].split(",", 1)
    assert head == "data:text/csv;charset=utf-8;base64"
    csv = base64.b64decode(unquote(data)).decode()
    expected = leaderboard(read_table(study["table"]), read_ac_scores(study["scores"]))
    assert csv == expected.to_csv(index=False)
    assert {a.get("download") for a in page.links} >= {"leaderboard_vision.csv", "leaderboard_ocr.csv"}


def test_numbers_come_from_the_law_fit(study, page):
    """The leaderboard's law column and its interval, and the R² table, are fit_law's numbers."""
    from lmms_ac.law.data import from_table, read_ac_scores
    from lmms_ac.law.fit import fit_law
    from lmms_ac.results.table import clean_scores, read_table

    ac = read_ac_scores(study["scores"])
    data = from_table(clean_scores(read_table(study["table"])), ac)
    rep = fit_law(data, normalize="minmax")
    r2 = rep.benchmarks["mme"].models["AC_poly2"].r2
    row = next(r for r in page.tables["law-r2"] if r[0] == "mme")
    assert row[-1] == f"{r2:.3f}"
    cand = next(iter(CANDIDATES))
    pred = rep.benchmarks["mme"].predictions.set_index("setting").loc[cand]
    col = page.headers["leaderboard-all"].index("mme law")
    cell = next(r for r in page.tables["leaderboard-all"] if r[1] == cand)[col]
    assert cell == f"{pred['pred']:.1f} ±{(pred['hi'] - pred['lo']) / 2:.3g}"


def test_empty_sections_say_which_run_fills_them(tmp_path):
    """The demo's shape: one variant, clean + token permutation, A/C scores; no law, no probe maps yet."""
    from lmms_ac.testing.results_fixture import make_table

    t = make_table(benchmarks=["mme", "seed"], perturbations=["tokperm"], pil_variants=())
    t = t[t["variant"] == "clip-l14-336"]
    t.to_csv(tmp_path / "table.csv", index=False)
    score_rows({"clip-l14-336": TRAINED["clip-l14-336"]}).to_csv(tmp_path / "scores.csv", index=False)
    html = build_report(tmp_path / "table.csv", tmp_path / "scores.csv", tmp_path / "r.html").read_text()
    page = Page(html)
    assert set(SECTIONS) <= set(page.sections)
    assert len(page.tables["leaderboard-all"]) == 1
    law, policy, maps = page.sections["law"], page.sections["policy"], page.sections["maps"]
    for text in (law, policy, maps):
        assert "Nothing to show yet" in text
    assert "at least 2 variants" in law and "score-a" in law and "mme: 1" in law
    assert "at least 2 trained variants" in policy
    assert "tokgroup" in maps and "lmms-ac collect" in maps
    assert "Nothing to show yet" not in page.sections["robustness"]
    missing = page.sections["provenance"]
    assert "The law: benchmark score from (A, C): the law needs" in missing

    # no scores, no perturbations: leaderboard still there, every other section explains itself
    t[t["perturbation"] == "none"].to_csv(tmp_path / "clean.csv", index=False)
    page = Page(build_report(tmp_path / "clean.csv", None, tmp_path / "r2.html").read_text())
    assert "lmms-ac score-a" in page.sections["law"] and "--scores" in page.sections["policy"]
    assert "run the robustness tasks" in page.sections["robustness"]
    assert "A, C and the law's predictions are empty" in page.sections["leaderboard"]


def test_partial_score_store_builds_and_names_the_gap(tmp_path):
    table, scores = write_study(tmp_path, benchmarks=["mme"], perturbations=["tokperm"], pil_variants=())
    df = pd.read_csv(scores)
    df = df[~((df["variant"] == "mae-l") & (df["score"] == "C"))]
    df.to_csv(scores, index=False)
    page = Page(build_report(table, scores, tmp_path / "r.html", options=Options(policy_runs=10)).read_text())
    assert "mae-l has no C score yet" in page.sections["provenance"]
    assert "no A/C scores for mae-l" in page.sections["provenance"]
    assert "Nothing to show yet" not in page.sections["law"]


def test_damaged_score_store_gives_a_page_without_ac_and_says_why(tmp_path):
    """The store is read once, through lmms_ac.scores.store (validated row by row), never by a lenient read."""
    table, scores = write_study(tmp_path, benchmarks=["mme"], perturbations=["tokperm"], pil_variants=())
    text = scores.read_text()
    scores.write_text(text[: text.rindex(",")])  # a cut inside the last row
    page = Page(build_report(table, scores, tmp_path / "r.html", options=Options(policy_runs=10)).read_text())
    assert "does not end with a newline" in page.sections["provenance"]
    assert "provenance-scores" not in page.tables  # no half-read store shown as if it were whole
    assert "Nothing to show yet" in page.sections["law"]


def test_cli_report_and_bad_input(study, tmp_path, capsys):
    from lmms_ac.cli import main

    out = tmp_path / "report.html"
    args = ["report", "--table", str(study["table"]), "--out", str(out), "--runs", "5", "--benchmarks", "mme"]
    assert main(args) == 0 and out.stat().st_size > 10_000
    assert "wrote" in capsys.readouterr().out
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    capsys.readouterr()
    assert main(["report", "--table", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "x.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", "--table", str(study["table"]), "--out", str(tmp_path / "x.pdf")]) == 2
    assert ".html" in capsys.readouterr().err
    assert (
        main(
            [
                "report",
                "--table",
                str(study["table"]),
                "--scores",
                str(tmp_path / "none.csv"),
                "--out",
                str(tmp_path / "y.html"),
            ]
        )
        == 2
    )
    assert "scores file" in capsys.readouterr().err
    assert (
        main(["report", "--table", str(study["table"]), "--out", str(tmp_path / "z.html"), "--benchmarks", "textvqa"])
        == 2
    )
    assert "did you mean 'textvqa_val'" in capsys.readouterr().err


def test_templates_are_package_files():
    root = resources.files("lmms_ac.report") / "templates"
    names = {p.name for p in root.iterdir()}
    assert {"report.html.j2", "_macros.html.j2", "report.css", "report.js"} <= names


def test_inline_svg_is_made_embeddable():
    from lmms_ac.report.figures import inline_svg

    svg = (
        '<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/x.dtd">\n'
        '<svg width="10pt" height="5pt" viewBox="0 0 10 5" xmlns="http://www.w3.org/2000/svg"><metadata>m</metadata>'
        '<defs><clipPath id="p1"><rect/></clipPath></defs><g clip-path="url(#p1)"><use href="#p1"/></g></svg>'
    )
    out = inline_svg(svg, prefix="f9-")
    assert out.startswith('<svg style="max-width: 10pt" viewBox') and "metadata" not in out and "DOCTYPE" not in out
    assert 'id="f9-p1"' in out and "url(#f9-p1)" in out and 'href="#f9-p1"' in out and 'width="10pt"' not in out


def test_benchmark_notes_are_merged():
    from lmms_ac.report.sections import merge_benchmark_notes

    notes = ["mme: no score for x; left out", "seed: no score for x; left out", "seed: 3 points", "general note"]
    assert merge_benchmark_notes(notes, ["mme", "seed"]) == [
        "mme, seed: no score for x; left out",
        "seed: 3 points",
        "general note",
    ]


def test_importance_map_from_toknoise_runs(tmp_path):
    """toknoise draws (10 seeds per token group) become an importance map; an incomplete set is named as missing."""
    from lmms_ac.robustness.grammar import parse_perturbation, robust_task_name
    from lmms_ac.results.table import validate_table
    from lmms_ac.testing.results_fixture import result_row

    when = "2025-01-01T00:00:00"
    rows = [result_row("v", "mme", "acc", 80.0, when)]
    for g in range(4):
        for k in range(10):
            p = parse_perturbation(f"toknoise_m2_g{g}").with_seed(k)
            rows.append(
                result_row(
                    "v",
                    robust_task_name("mme", p),
                    "acc",
                    70.0 - 5 * g + k % 3,
                    when,
                    perturbation=p.with_seed(0).to_string(),
                    seed=k,
                    base="mme",
                )
            )
    for g in range(3):  # a 3x3 tokgroup set missing its last group
        p = parse_perturbation(f"tokgroup_m3_g{g}")
        rows.append(
            result_row(
                "v", robust_task_name("mme", p), "acc", 40.0, when, perturbation=p.to_string(), seed=0, base="mme"
            )
        )
    validate_table(pd.DataFrame(rows)).to_csv(tmp_path / "t.csv", index=False)
    page = Page(build_report(tmp_path / "t.csv", None, tmp_path / "r.html").read_text())
    assert "v · mme · importance (2x2)" in page.sections["maps"]
    assert page.sections["maps"].count("(3x3)") == 0
    assert "pil map v / mme (3x3)" in page.sections["provenance"] and "mme_tokgroup_m3_g" in page.sections["provenance"]


@pytest.mark.slow
def test_report_command_registers_without_heavy_imports():
    """`lmms-ac --help` stays fast: registering `report` imports no pandas, matplotlib, jinja2 or torch."""
    import subprocess
    import sys

    code = (
        "import sys, argparse, lmms_ac.report, lmms_ac.cli.report as c\n"
        "c.register(argparse.ArgumentParser().add_subparsers())\n"
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'jinja2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_two_trained_variants_still_give_a_page_without_the_prior_policy(tmp_path):
    """The prior policies need >= 3 scored settings; a study with 2 trained variants gets the other policies."""
    import pandas as pd

    from lmms_ac.report import build_report
    from lmms_ac.testing.results_fixture import write_study

    table, scores = write_study(tmp_path, benchmarks=["mme", "ok_vqa"], perturbations=["tokperm"], pil_variants=())
    df = pd.read_csv(table)
    df[df["variant"].isin(["clip-l14-336", "dinov2-l"])].to_csv(table, index=False)
    html = build_report(table, scores, tmp_path / "report.html").read_text()
    assert "prior, prior-check left out (a world has no source benchmark" in html
    assert 'id="policy"' in html


def test_example_fills_law_and_policy_only_while_the_table_cannot(tmp_path):
    """--example law-v1: a one-variant table gets the law and the policy on the published data, labelled as not
    the user's runs; a table that can fit its own law shows its own (the example is not used)."""
    from lmms_ac.testing.results_fixture import make_table

    t = make_table(benchmarks=["mme", "seed"], perturbations=["tokperm"], pil_variants=())
    one = t[t["variant"] == "clip-l14-336"]
    one.to_csv(tmp_path / "one.csv", index=False)
    score_rows({"clip-l14-336": TRAINED["clip-l14-336"]}).to_csv(tmp_path / "scores.csv", index=False)
    options = Options(policy_runs=10, example="law-v1")
    page = Page(
        build_report(tmp_path / "one.csv", tmp_path / "scores.csv", tmp_path / "r.html", options=options).read_text()
    )
    for s in ("law", "policy"):
        assert "Nothing to show yet" not in page.sections[s]
        assert "published example: law-v1, not your runs" in page.sections[s]
        assert "at least 2 variants" in page.sections[s] or "at least 2 trained" in page.sections[s]
    assert [r[0] for r in page.tables["law-r2"]][:2] == ["mmbench_en", "mme"]  # the example's benchmarks
    assert "policy: train next" not in page.sections["policy"]  # every example setting is trained: no recommendation
    own = Page(
        build_report(
            *write_study(tmp_path / "own", benchmarks=["mme"], perturbations=[]), tmp_path / "own.html", options=options
        ).read_text()
    )
    assert "published example" not in own.sections["law"] and "published example" not in own.sections["policy"]
