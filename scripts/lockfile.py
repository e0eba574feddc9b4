#!/usr/bin/env python3
"""The environment lock that `make env` installs from (constraints.txt), and drift against it.

  lockfile.py write OUT   freeze this interpreter's environment into OUT (torch and its CUDA wheels excluded:
                          the Makefile's TORCH variable chooses them); used by `make lock`
  lockfile.py diff LOCK   list the packages of this environment whose version differs from LOCK; used by
                          `make test-latest` to name what changed upstream when the newest versions break us

Only the standard library: it runs in any venv, before or after the project is installed.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Dict

# chosen by TORCH in the Makefile (a CUDA build brings its own nvidia-*/triton/cuda-* wheels)
EXCLUDED = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")
PROJECT = "lmms-ac"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> Dict[str, str]:
    """name -> version of every distribution in this environment, without the project and torch's wheels."""
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name or _norm(name) in (PROJECT, "pip", "setuptools", "wheel") or EXCLUDED.match(_norm(name)):
            continue
        out[_norm(name)] = dist.version
    return dict(sorted(out.items()))


def read_lock(path: str) -> Dict[str, str]:
    pins = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line:
            raise SystemExit(f"{path}:{n}: expected 'name==version', got {line!r}; regenerate it with `make lock`")
        name, version = line.split("==", 1)
        pins[_norm(name)] = version.strip()
    return pins


def write(out: str) -> int:
    pins = installed()
    header = [
        "# The tested environment of `make env` / `make test` / `make demo` (pip constraints, one pin per package).",
        "# Regenerate with `make lock` (fresh resolution of pyproject.toml's dependencies, then the tests).",
        "# torch and its CUDA wheels are not pinned here: the Makefile's TORCH variable chooses them.",
        f"# Resolved {datetime.date.today().isoformat()} on Python {platform.python_version()} ({sys.platform}).",
    ]
    text = "\n".join(header + [f"{k}=={v}" for k, v in pins.items()]) + "\n"
    target = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent.resolve()))
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    print(f"wrote {len(pins)} pins to {target}")
    return 0


def diff(lock: str) -> int:
    pinned, have = read_lock(lock), installed()
    changed = [(k, pinned[k], have[k]) for k in sorted(pinned.keys() & have.keys()) if pinned[k] != have[k]]
    added = sorted(have.keys() - pinned.keys())
    if not changed and not added:
        print(f"no drift: this environment matches {lock}")
        return 0
    print(f"packages that differ from {lock} (tested -> here):")
    for name, old, new in changed:
        major = " (new major version)" if old.split(".")[0] != new.split(".")[0] else ""
        print(f"  {name}: {old} -> {new}{major}")
    for name in added:
        print(f"  {name}: new dependency {have[name]}")
    return 0


def main(argv) -> int:
    if len(argv) != 2 or argv[0] not in ("write", "diff"):
        print(__doc__, file=sys.stderr)
        return 2
    return write(argv[1]) if argv[0] == "write" else diff(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
