"""One-way layers, checked on the source (``lmms_ac.testing.import_graph``: ast, imports inside functions
count too). Print the drawing with ``python -m lmms_ac.testing.import_graph``.

    plugin, registry, io, benchmarks...  <-  vision, tasks  <-  vlm, robustness  <-  scores  <-  results,
    models  <-  law  <-  layers, report  <-  study  <-  cli, entry_point

No module imports a higher layer, no circle joins any two modules, ``lmms_ac.plugin`` (the adapter of
lmms-eval internals) imports nothing of lmms-ac, and no other module imports lmms-eval."""

from __future__ import annotations

from typing import Dict, Set

import pytest

from lmms_ac.testing import import_graph as G


@pytest.fixture(scope="module")
def read_once() -> Dict[str, Set[str]]:
    return G.graph()


@pytest.fixture
def graph(read_once) -> Dict[str, Set[str]]:
    """The drawing read from the source once per module; each test gets a copy it may change."""
    return {m: set(d) for m, d in read_once.items()}


def test_the_graph_sees_the_imports(graph):
    assert "lmms_ac.robustness.generation" in graph["lmms_ac.robustness.index"]  # module level
    assert "lmms_ac.plugin" in graph["lmms_ac.robustness.generation"]  # inside a function
    assert "lmms_ac.report.figures" in graph["lmms_ac.report.sections"]  # import a.b.c as c
    assert "lmms_ac.law.fit" in graph["lmms_ac.report.leaderboard"]
    assert G.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_anywhere(graph):
    assert G.cycles(graph) == []


def test_no_import_goes_up_a_layer_and_every_package_has_one(graph):
    assert G.upward_imports(graph) == []
    assert {G.package(m) for m in graph} - set(G.layer_of()) - G.UNLAYERED == set()


def test_a_planted_upward_import_is_caught(graph):
    graph["lmms_ac.registry"].add("lmms_ac.results.table")
    graph["lmms_ac.results.table"].add("lmms_ac.testing.tiny")
    graph["lmms_ac.newpkg.thing"] = set()
    wrong = G.upward_imports(graph)
    assert any(w.startswith("lmms_ac.registry (registry, layer 0) imports lmms_ac.results.table") for w in wrong)
    assert any("imports the test helper lmms_ac.testing.tiny" in w for w in wrong)
    assert any("package 'newpkg' has no layer" in w for w in wrong)
    graph["lmms_ac.registry"].add("lmms_ac.benchmarks")  # benchmarks imports registry: a circle
    assert any({"lmms_ac.benchmarks", "lmms_ac.registry"} <= set(c) for c in G.cycles(graph))


def test_the_adapter_imports_nothing_of_ours_and_is_the_only_door_to_lmms_eval(graph):
    assert graph["lmms_ac.plugin"] == set()
    doors = sorted(
        name
        for name, path in G.modules().items()
        if any(d == "lmms_eval" or d.startswith("lmms_eval.") for d in G.imported_names(name, path))
    )
    assert doors == ["lmms_ac.plugin"]


def test_command_modules_live_in_one_folder():
    from lmms_ac.cli import COMMAND_MODULES

    assert all(m.startswith("lmms_ac.cli.") for m in COMMAND_MODULES)
    registering = sorted(
        name for name, path in G.modules().items() if "def register(sub" in path.read_text(encoding="utf-8")
    )
    assert registering == sorted(COMMAND_MODULES)


def test_the_drawing_prints_every_layer(graph):
    text = G.drawing(graph)
    assert text.splitlines()[0] == f"layer {len(G.LAYERS) - 1}" and "plugin          -> (nothing of lmms-ac)" in text
    dot = G.drawing(graph, dot=True)
    assert dot.startswith("digraph lmms_ac {") and "results -> robustness;" in dot


def test_the_fast_test_guard_refuses_python_and_our_programs_not_system_helpers(tmp_path):
    from conftest import starts_something_slow

    fake = tmp_path / "lmms-eval-fake"
    fake.write_text("#!/usr/bin/env python3\nprint('fake lmms-eval')\n")
    assert starts_something_slow([str(fake), "--model", "x"])  # a test's fake is a Python process too
    assert starts_something_slow(["python", "-c", "pass"]) and starts_something_slow("python3 -m lmms_eval")
    assert starts_something_slow(["/usr/bin/sbatch", "job.sh"]) and starts_something_slow(["lmms-ac", "tasks"])
    assert not starts_something_slow(["git", "rev-parse", "HEAD"])
    assert not starts_something_slow(["/sbin/ldconfig", "-p"])  # ctypes looking for a library at import
