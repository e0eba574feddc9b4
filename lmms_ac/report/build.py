"""Build the study report: tidy table + scores store -> one ``Analysis`` -> one self-contained HTML page.

``build_report`` reads the files (``lmms-ac report``); the study runner builds the ``Analysis`` from its
in-memory table and scores (``analysis_of``), writes its own files from it, then the page (``write_page``):
every quantity is computed once per report. The page
needs no network: styles and scripts are inlined, figures are inline SVG, the leaderboard CSV is a
``data:`` link. Templates (Jinja2) ship in ``lmms_ac/report/templates``.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import pandas as pd
from loguru import logger

from lmms_ac.io import atomic_write_text
from lmms_ac.report.inside import inside_section
from lmms_ac.report.sections import (
    Analysis,
    example_analysis,
    Inputs,
    Options,
    Section,
    law_section,
    leaderboard_section,
    maps_section,
    policy_section,
    provenance_section,
    robustness_section,
)
from lmms_ac.report.tables import fmt_num

PathLike = Union[str, os.PathLike]


def _without_ac(err: ValueError) -> Tuple[None, str]:
    logger.warning(f"A/C scores unusable, the report is built without them: {err}")
    return None, str(err)


def read_ac(path: Path, raw: pd.DataFrame, options: Options) -> Tuple[Optional[pd.DataFrame], str]:
    """A/C per variant from the scores file ``path`` as :func:`read_scores_file` read it (``raw``), and a
    problem description when unusable.

    Variants of a score store that have only one of the two scores so far are left out (and named);
    a store that cannot give A/C at all yields ``(None, reason)``: the report is still built.
    """
    from lmms_ac.law.data import ac_scores_from_frame

    problem = ""
    a, c, vcol = options.a_col, options.c_col, options.variant_col
    if {"score", "value", vcol} <= set(raw.columns) and a not in raw.columns:
        have = raw.groupby(raw[vcol].astype(str))["score"].agg(lambda s: set(map(str, s)))
        partial = {v: sorted({a, c} - s) for v, s in have.items() if not {a, c} <= s and s & {a, c}}
        if partial and len(partial) < len(have):
            problem = (
                "; ".join(f"{v} has no {' / '.join(m)} score yet" for v, m in partial.items())
                + " (run lmms-ac score-a / score-c for them; left out of the law)"
            )
            raw = raw[~raw[vcol].astype(str).isin(partial)]
    try:
        ac = ac_scores_from_frame(raw, str(path), variant_col=vcol, a_col=a, c_col=c)
    except ValueError as err:
        return _without_ac(err)
    if problem:
        logger.warning(problem)
    return ac, problem


def read_scores_file(path: Path) -> Tuple[Optional[pd.DataFrame], str]:
    """The scores file as ``lmms_ac.scores.store`` reads it (a store validated row by row, or a wide A/C
    table), or ``(None, reason)`` when it is damaged: the report is still built, without A/C."""
    from lmms_ac.scores.store import read_scores_frame

    if not path.exists():
        raise FileNotFoundError(
            f"scores file {path} does not exist; write it with lmms-ac score-a / score-c or leave --scores out"
        )
    try:
        return read_scores_frame(path), ""
    except ValueError as err:
        return _without_ac(err)


def _ticks(text: object):
    """Escape ``text`` and show `backticked` commands as code."""
    from markupsafe import Markup, escape

    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(str(text)))))


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("lmms_ac.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_num
    env.filters["ticks"] = _ticks
    return env


def analysis_of(
    table: pd.DataFrame,
    table_path: PathLike,
    scores: Optional[pd.DataFrame] = None,
    scores_path: Optional[PathLike] = None,
    options: Optional[Options] = None,
    scores_problem: str = "",
) -> Analysis:
    """The one ``Analysis`` of a report, from the tidy table and the scores as read (in memory): A/C come from
    ``scores`` as :func:`read_ac` reads them; ``*_path`` name the files in messages and provenance."""
    options = options or Options()
    scores_path = Path(scores_path) if scores_path else None
    ac, problem = (None, scores_problem)
    if scores is not None:
        ac, problem = read_ac(scores_path or Path("scores"), scores, options)
    return Analysis(Inputs(table, Path(table_path), scores_path, ac, problem, scores), options)


def load_analysis(
    table_csv: PathLike, scores_csv: Optional[PathLike] = None, options: Optional[Options] = None
) -> Analysis:
    """``analysis_of`` the files ``lmms-ac collect`` and ``score-a``/``score-c`` wrote."""
    from lmms_ac.results.table import read_table

    table_path = Path(table_csv)
    scores_path = Path(scores_csv) if scores_csv else None
    raw, problem = read_scores_file(scores_path) if scores_path else (None, "")
    return analysis_of(read_table(table_path), table_path, raw, scores_path, options, problem)


def sections_of(an: Analysis, config: Optional[Mapping[str, Any]] = None) -> List[Section]:
    """Every section of the page as data (see ``sections``), in page order, from one ``Analysis``."""
    law, policy = law_section(an), policy_section(an)
    if an.options.example and law.empty:
        example = example_analysis(an.options.example, an.options)
        law = as_example(law_section(example), example.example, law.empty)
        if policy.empty:
            policy = as_example(policy_section(example), example.example, policy.empty)
    secs = [leaderboard_section(an), law, policy, robustness_section(an), maps_section(an)]
    secs.append(inside_section(an.inputs.scores, an.table))
    cfg = {
        "command": "report",
        "table": str(an.inputs.table_path),
        "scores": str(an.inputs.scores_path) if an.inputs.scores_path else None,
        **asdict(an.options),
        **dict(config or {}),
    }
    secs.append(provenance_section(an, cfg, secs))
    return secs


def as_example(sec: Section, name: str, why_not_yours: str) -> Section:
    """A section computed on a bundled example, titled and noted as such (never mistaken for the user's runs)."""
    from lmms_ac.law.examples import EXAMPLES

    a_col = str(EXAMPLES[name]["a_col"])
    sec.title = f"{sec.title} (published example: {name}, not your runs)"
    sec.notes.insert(
        0,
        f"Shown on the published {name} data bundled with lmms-ac because your results cannot fill this section "
        f"yet: {why_not_yours[:1].lower() + why_not_yours[1:]} Its A is the example's `{a_col}` column, which may "
        "be another definition than the caption log-likelihood A of score-a.",
    )
    return sec


def compute_sections(
    table_csv: PathLike,
    scores_csv: Optional[PathLike] = None,
    options: Optional[Options] = None,
    config: Optional[Mapping[str, Any]] = None,
) -> Tuple[List[Section], Analysis]:
    """Every section of the report of these files, and the analysis they were computed from."""
    an = load_analysis(table_csv, scores_csv, options)
    return sections_of(an, config), an


def render(sections: Sequence[Section], analysis: Analysis, warnings: Sequence[str] = ()) -> str:
    """The HTML page of ``sections``; ``warnings`` (e.g. a study's failed models) head the page."""
    t = analysis.table
    summary = {
        "variants": len(analysis.trained),
        "candidates": 0 if analysis.ac is None else len([v for v in analysis.ac.index if v not in analysis.trained]),
        "benchmarks": len(analysis.benchmarks),
        "perturbations": int(t.loc[t["perturbation"] != "none", "perturbation"].nunique()),
        "rows": len(t),
    }
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=analysis.options.title,
            sections=sections,
            by_id={s.id: s for s in sections},
            summary=summary,
            warnings=list(warnings) + ([analysis.inputs.ac_problem] if analysis.inputs.ac_problem else []),
        )
    )


def check_page_path(out_html: PathLike, overwrite: bool) -> Path:
    """``out_html`` as a Path if the page may be written there, else the error with the fix."""
    from lmms_ac.results.output import check_output

    out = Path(out_html)
    check_output(out, overwrite)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"the report is an HTML page: give --out a .html path, not {out}")
    return out


def write_page(
    an: Analysis,
    out_html: PathLike,
    *,
    overwrite: bool = False,
    config: Optional[Mapping[str, Any]] = None,
    warnings: Sequence[str] = (),
) -> Path:
    """Write the HTML page of ``an`` to ``out_html`` (an existing file is refused unless ``overwrite``)."""
    out = check_page_path(out_html, overwrite)
    return atomic_write_text(out, render(sections_of(an, config), an, warnings), overwrite=overwrite)


def build_report(
    table_csv: PathLike,
    scores_csv: Optional[PathLike],
    out_html: PathLike,
    *,
    options: Optional[Options] = None,
    overwrite: bool = False,
    config: Optional[Mapping[str, Any]] = None,
    warnings: Sequence[str] = (),
) -> Path:
    """Write the report of a study to ``out_html`` and return its path.

    ``table_csv``: the tidy table of ``lmms-ac collect``; ``scores_csv``: the A/C scores store of
    ``score-a`` / ``score-c`` (or a wide variant,A,C file), optional. An existing ``out_html`` is
    refused unless ``overwrite``.
    """
    check_page_path(out_html, overwrite)  # before any work
    an = load_analysis(table_csv, scores_csv, options)
    return write_page(an, out_html, overwrite=overwrite, config=config, warnings=warnings)
