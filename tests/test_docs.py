"""The documentation the code cites ships with it and every citation lands on a section.

Docstrings and comments point at ``docs/<file>.md#<anchor>``; the anchor must be a heading of that file
under GitHub's rule (lowercase, spaces to '-', punctuation other than '-' and '_' dropped, '-1', '-2'...
for repeated headings). A citation of the design notes that never shipped (a bare ``METHODS.md`` or
``DESIGN.md`` outside ``docs/``) is refused: a user of the package cannot open it. Links inside ``docs/``
are checked the same way. Reads files only."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_DIRS = {"out", "build", "dist", "node_modules", "__pycache__"}
CITATION = re.compile(r"docs/([\w.-]+\.md)(?:#([\w-]+))?")
NOTES = re.compile(r"((?:[\w.-]+/)*)((?:METHODS|DESIGN)[\w-]*\.md)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
LINK = re.compile(r"\]\(([^)\s]*)\)")


def github_anchor(text: str) -> str:
    """The id GitHub gives a heading: inline code and link markup removed, lowercased, every character
    but letters, digits, '_', '-' and spaces dropped, spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.replace("`", "").strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in "_- ")
    return text.replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    """Every anchor of a Markdown file's headings (fenced code skipped; repeats numbered as GitHub does)."""
    seen: Dict[str, int] = {}
    out: Set[str] = set()
    fence = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line)
        if m:
            mark = m.group(1)
            if not fence:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence):
                fence = ""
            continue
        if fence:
            continue
        h = HEADING.match(line)
        if not h:
            continue
        base = github_anchor(h.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def repo_files(suffix: str) -> Iterator[Path]:
    """The repository's files ending in ``suffix``, outside hidden folders (virtual environments, caches)."""
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not (d.startswith(".") or d in SKIP_DIRS or d.endswith(".egg-info")))
        for name in sorted(files):
            if name.endswith(suffix):
                yield Path(folder) / name


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def citations() -> List[Tuple[str, str, str]]:
    """(where, file, anchor) of every ``docs/<file>.md[#anchor]`` in a .py or .md file of the repository."""
    found = []
    for path in [*repo_files(".py"), *repo_files(".md")]:
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in CITATION.finditer(text):
            found.append((f"{path.relative_to(ROOT)}:{line_of(text, m.start())}", m.group(1), m.group(2) or ""))
    return found


def test_the_docs_exist():
    for name in ("METHODS.md", "ARCHITECTURE.md"):
        assert (DOCS / name).is_file(), f"docs/{name} is missing"


def test_github_anchor_rule():
    assert github_anchor("A: caption log-likelihood") == "a-caption-log-likelihood"
    assert github_anchor("A_embed: embedding similarity") == "a_embed-embedding-similarity"
    assert github_anchor("Fitting a quadratic in (A, C)") == "fitting-a-quadratic-in-a-c"
    assert github_anchor("`cells_dropped`") == "cells_dropped"
    assert github_anchor("See [the law](#the-law)") == "see-the-law"


def test_repeated_headings_are_numbered(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Intro\n## Notes\n```\n## not a heading\n```\n## Notes\n", encoding="utf-8")
    assert anchors(page) == {"intro", "notes", "notes-1"}


def test_code_citations_resolve():
    found = citations()
    assert any(".py:" in where for where, _, _ in found), "no docstring cites docs/"
    bad = []
    cache: Dict[str, Set[str]] = {}
    for where, name, anchor in found:
        target = DOCS / name
        if not target.is_file():
            bad.append(f"{where}: docs/{name} does not exist")
            continue
        if anchor and anchor not in cache.setdefault(name, anchors(target)):
            bad.append(f"{where}: docs/{name}#{anchor} is not a heading of docs/{name}")
    assert not bad, "citations that lead nowhere:\n" + "\n".join(bad)


def test_no_bare_design_notes():
    """``METHODS.md``/``DESIGN.md`` are cited only as ``docs/...`` (the files users have)."""
    bad = []
    for path in repo_files(".py"):
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in NOTES.finditer(text):
            if not m.group(1).endswith("docs/"):
                bad.append(f"{path.relative_to(ROOT)}:{line_of(text, m.start())}: {m.group(0)}")
    assert not bad, "cite docs/METHODS.md#<anchor> or docs/ARCHITECTURE.md#<anchor> instead:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", ["METHODS.md", "ARCHITECTURE.md"])
def test_links_inside_the_docs_resolve(name):
    page = DOCS / name
    text = page.read_text(encoding="utf-8")
    bad = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            bad.append(f"docs/{name}:{line_of(text, m.start())}: {target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            bad.append(f"docs/{name}:{line_of(text, m.start())}: {target} (no such heading)")
    assert not bad, "broken links:\n" + "\n".join(bad)
