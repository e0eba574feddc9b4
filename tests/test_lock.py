"""The lock (constraints.txt) is what `make env` and CI install, and it satisfies pyproject's ranges."""

from __future__ import annotations

import re
import subprocess
import sys

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import lockfile  # noqa: E402


def _lock():
    return lockfile.read_lock(str(ROOT / "constraints.txt"))


def _requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("test", "diffusion", "bench"):
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def test_ci_and_make_env_install_from_the_lock():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^LOCK \?= constraints\.txt$", makefile, re.M)
    env_recipe = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "$(if $(LOCK),-c $(LOCK))" in env_recipe and "$(LOCK)" in env_recipe.splitlines()[0]


def test_lock_pins_every_dependency_inside_pyproject_ranges_and_no_torch():
    pins = _lock()
    assert not [p for p in pins if re.match(r"^(torch|torchvision|nvidia-|triton)", p)]
    for req in _requirements():
        name = lockfile._norm(req.name)
        if name in ("torch", "torchvision"):
            continue
        assert name in pins, f"{req.name} is not in constraints.txt: run make lock"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), f"{name}=={pins[name]} violates {req}"
    assert Version(pins["filelock"]) < Version("4")


@pytest.mark.lock
def test_this_environment_is_the_lock():
    """In `make test` (and CI) the environment is exactly the lock; `make test-latest` deselects this."""
    drift = {k: (v, metadata.version(k)) for k, v in _lock().items() if metadata.version(k) != v}
    assert not drift, f"installed versions differ from constraints.txt: {drift}; rebuild with `make clean env`"


@pytest.mark.slow
def test_drift_report_names_changed_packages(tmp_path):
    lock = tmp_path / "constraints.txt"
    pins = dict(_lock())
    pins["numpy"] = "1.0.0"
    lock.write_text("# header\n" + "\n".join(f"{k}=={v}" for k, v in pins.items()) + "\n")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lockfile.py"), "diff", str(lock)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"numpy: 1\.0\.0 -> \S+ \(new major version\)", out)
