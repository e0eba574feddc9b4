"""The drawing of lmms-ac's imports, read from the source with ``ast`` (imports inside functions count too),
and the layers it must respect. ``tests/test_import_layers.py`` checks it; print it with

    python -m lmms_ac.testing.import_graph          # packages by layer, each with what it imports
    python -m lmms_ac.testing.import_graph --dot    # the same as a Graphviz digraph

The flow reads from the folder names: a checkpoint is loaded by ``vision``/``vlm`` and run by ``models``
(the lmms-eval model) on ``tasks`` and the ``robustness`` variants; ``results`` turns lmms-eval's output
into the tidy table; ``law`` fits it with the ``scores`` (A, C); ``layers``, ``report`` and ``study``
sit above; ``cli`` and ``entry_point`` at the top. ``plugin`` is the adapter of lmms-eval internals
and imports nothing of lmms-ac, so anything may use it.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set

ROOT = Path(__file__).resolve().parents[2]
#: import name -> folder (setup.py maps the top-level folders under ``lmms_ac``)
FOLDERS = {
    "lmms_ac": "lmms_ac",
    "lmms_ac.models": "models",
    "lmms_ac.tasks": "tasks",
    "lmms_ac.robustness": "robustness",
}
#: lowest first; a package imports its own layer or lower ones only (``lmms_ac`` is the package root)
LAYERS: List[Set[str]] = [
    {"lmms_ac", "plugin", "registry", "io", "images", "strict_csv", "model_args", "benchmarks"},
    {"vision", "tasks", "local_datasets", "verify_images", "doctor"},
    {"vlm", "robustness"},
    {"scores", "perturb_bridge"},
    {"results", "models"},
    {"law"},
    {"layers", "report"},
    {"study"},
    {"cli", "entry_point"},
]
#: builders of tiny models and datasets for the tests, the benchmarks and the demo: outside the layers,
#: imported by the top layer only (``lmms-ac demo``)
UNLAYERED = {"testing"}


def modules(root: Path = ROOT) -> Dict[str, Path]:
    """Import name -> source file of every module of lmms-ac."""
    out: Dict[str, Path] = {}
    for pkg, folder in FOLDERS.items():
        for path in (root / folder).rglob("*.py"):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if pkg == "lmms_ac" and parts and parts[0] in ("models", "tasks", "robustness"):
                continue  # mapped folders are listed under their import name
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg] + parts)] = path
    return out


def imported_names(name: str, path: Path) -> Set[str]:
    """Every absolute module name ``path`` imports, anywhere in the file (relative imports resolved)."""
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
    return deps


def _resolve(deps: Iterable[str], known: Set[str], name: str) -> Set[str]:
    resolved = set()
    for dep in deps:
        while dep and dep not in known:  # ``from pkg.mod import name`` -> pkg.mod
            dep = dep.rpartition(".")[0]
        if dep and dep != name:
            resolved.add(dep)
    return resolved


def graph(root: Path = ROOT) -> Dict[str, Set[str]]:
    """Module -> the lmms-ac modules it imports."""
    mods = modules(root)
    known = set(mods)
    return {name: _resolve(imported_names(name, path), known, name) for name, path in mods.items()}


def package(module: str) -> str:
    """``lmms_ac.results.table`` -> ``results``; ``lmms_ac`` -> ``lmms_ac``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_graph(g: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    out: Dict[str, Set[str]] = {}
    for module, deps in g.items():
        src = package(module)
        out.setdefault(src, set()).update(package(d) for d in deps if package(d) != src)
    return out


def cycles(g: Dict[str, Set[str]]) -> List[List[str]]:
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
        for w in sorted(g.get(v, ())):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def layer_of() -> Dict[str, int]:
    return {pkg: i for i, pkgs in enumerate(LAYERS) for pkg in pkgs}


def upward_imports(g: Dict[str, Set[str]]) -> List[str]:
    """Each import of a package from a higher layer than its own (or of an unplaced package)."""
    layer = layer_of()
    wrong = []
    for module, deps in sorted(g.items()):
        src = package(module)
        if src in UNLAYERED:
            continue
        if src not in layer:
            wrong.append(f"{module}: package {src!r} has no layer; add it to LAYERS in {__name__}")
            continue
        for dep in sorted(deps):
            dst = package(dep)
            if dst in UNLAYERED:
                if layer[src] < len(LAYERS) - 1:
                    wrong.append(f"{module} imports the test helper {dep}; only the top layer (the demo) may")
                continue
            if dst not in layer:
                continue  # reported as the unplaced package's own line
            if layer[dst] > layer[src]:
                wrong.append(
                    f"{module} ({src}, layer {layer[src]}) imports {dep} ({dst}, layer {layer[dst]}), a higher layer"
                )
    return wrong


def drawing(g: Dict[str, Set[str]], dot: bool = False) -> str:
    pg = package_graph(g)
    if dot:
        lines = ["digraph lmms_ac {", "  rankdir=BT;"]
        for i, pkgs in enumerate(LAYERS):
            lines.append(f"  {{ rank=same; {' '.join(sorted(pkgs))} }}  // layer {i}")
        lines += [f"  {src} -> {dst};" for src in sorted(pg) for dst in sorted(pg[src])]
        return "\n".join(lines + ["}"])
    lines = []
    for i, pkgs in reversed(list(enumerate(LAYERS))):
        lines.append(f"layer {i}")
        for pkg in sorted(pkgs):
            lines.append(f"  {pkg:<15} -> {', '.join(sorted(pg.get(pkg, ()))) or '(nothing of lmms-ac)'}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="print lmms-ac's import drawing by layer (checked by tests/test_import_layers.py)"
    )
    parser.add_argument("--dot", action="store_true", help="Graphviz output")
    args = parser.parse_args(argv)
    g = graph()
    print(drawing(g, dot=args.dot))
    problems = [f"circle: {' <-> '.join(c)}" for c in cycles(g)] + upward_imports(g)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
