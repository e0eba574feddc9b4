"""One-way layers, checked on the source (ast; imports inside functions count too):

    registry, io, benchmarks  <-  robustness, scores  <-  results (the table)  <-  law  <-  report

Command modules (``lmms_ac.cli.COMMAND_MODULES`` and ``lmms_ac.cli``) are the top layer and may
import anything; no module of the layered packages imports them. No two modules of ``robustness`` import each other
in a circle, and no circle joins the layered packages. (``lmms_ac.plugin``, the lmms-eval entry point
and adapter, is outside the layers: its hook calls into ``robustness.index``, which writes the
TaskManager index through the plugin's adapter functions.)"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterable, List, Set


ROOT = Path(__file__).resolve().parents[1]
#: import name -> folder (setup.py maps the top-level folders under ``lmms_ac``)
FOLDERS = {"lmms_ac": "lmms_ac", "lmms_ac.models": "models", "lmms_ac.tasks": "tasks",
           "lmms_ac.robustness": "robustness"}
#: lower layers first; a package may import its own layer or lower ones only
LAYERS: List[Set[str]] = [{"registry", "io", "benchmarks", "strict_csv"}, {"robustness", "scores"}, {"results"},
                          {"law"}, {"report"}]


def _modules() -> Dict[str, Path]:
    out: Dict[str, Path] = {}
    for pkg, folder in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if pkg == "lmms_ac" and parts and parts[0] in ("models", "tasks", "robustness", "testing"):
                continue  # mapped folders are listed under their import name; testing helpers are not layered
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg] + parts)] = path
    return out


def _imports(name: str, path: Path, known: Iterable[str]) -> Set[str]:
    known = set(known)
    deps: Set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            deps.add(module)
            deps.update(f"{module}.{a.name}" for a in node.names)
    resolved = set()
    for dep in deps:
        while dep and dep not in known:  # ``from pkg.mod import name`` -> pkg.mod
            dep = dep.rpartition(".")[0]
        if dep and dep != name:
            resolved.add(dep)
    return resolved


def _graph() -> Dict[str, Set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _commands() -> Set[str]:
    from lmms_ac.cli import COMMAND_MODULES

    return set(COMMAND_MODULES) | {"lmms_ac.cli"}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_graph_sees_the_imports():
    graph = _graph()
    assert "lmms_ac.robustness.generation" in graph["lmms_ac.robustness.index"]  # module level
    assert "lmms_ac.plugin" in graph["lmms_ac.robustness.index"]  # inside a function
    assert "lmms_ac.law.fit" in graph["lmms_ac.report.leaderboard"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_between_modules_of_robustness():
    graph = _graph()
    sub = {m: {d for d in deps if d.startswith("lmms_ac.robustness.")} for m, deps in graph.items()
           if m.startswith("lmms_ac.robustness.")}
    assert _cycles(sub) == []
    assert "lmms_ac.robustness.tasks" not in graph["lmms_ac.robustness.synthesis"]


def test_packages_import_one_way():
    graph = _graph()
    commands = _commands()
    layer = {pkg: i for i, pkgs in enumerate(LAYERS) for pkg in pkgs}
    packages: Dict[str, Set[str]] = {}
    wrong = []
    for module, deps in graph.items():
        if module in commands:
            continue
        src = _package(module)
        for dep in deps:
            if dep in commands and src in layer:
                wrong.append(f"{module} imports the command module {dep}")
                continue
            dst = _package(dep)
            if dst == src:
                continue
            packages.setdefault(src, set()).add(dst)
            if src in layer and dst in layer and layer[dst] > layer[src]:
                wrong.append(f"{module} ({src}) imports {dep} ({dst}), a higher layer")
    assert wrong == []
    layered = {src: {d for d in dsts if d in layer} for src, dsts in packages.items() if src in layer}
    assert _cycles(layered) == []

