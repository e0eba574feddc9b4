# Set-up from nothing: `make test` and `make demo` build the virtual environment first.
# TORCH pins the wheels that lie on this project's machines; override it for your CUDA build.
# LOCK is the tested set of every other package (constraints.txt, made by `make lock`); `make env LOCK=`
# installs the newest versions pyproject.toml allows instead.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
LOCK ?= constraints.txt
EXTRAS := test,diffusion,bench
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lmms-ac-installed
DEMO_OUT ?= out/demo

.PHONY: env lint test test-fast test-latest lock demo bench doctor clean

env: $(STAMP)

$(STAMP): pyproject.toml setup.py $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet $(if $(LOCK),-c $(LOCK)) -e '.[$(EXTRAS)]'
	$(VENV)/bin/lmms-ac doctor --quick
	touch $(STAMP)

# ruff: the lint rules and the layout (`ruff format` writes it; line length 120, pyproject.toml [tool.ruff])
lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: env lint
	$(PY) -m pytest -q

# The tests not marked slow, on every core, each worker taking the next test when idle (worksteal: the
# durations are uneven); FAST_WORKERS=0 runs them in this process. One torch thread per
# worker: two workers of two threads each on two cores are slower than one.
FAST_WORKERS ?= auto
test-fast: env lint
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" -n $(FAST_WORKERS) --dist worksteal

# A fresh resolution of pyproject.toml (newest versions) -> constraints.txt, then the whole suite on it.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet $(TORCH)
	.venv-lock/bin/python -m pip install --quiet -e '.[$(EXTRAS)]'
	.venv-lock/bin/python scripts/lockfile.py diff constraints.txt || true
	.venv-lock/bin/python scripts/lockfile.py write constraints.txt
	.venv-lock/bin/python -m pytest -q

# Drift watch: the newest versions pyproject.toml allows, in a second environment, against the fast tests.
# On failure it names the packages that differ from the lock and the doctor's known-bad findings.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade pip
	.venv-latest/bin/python -m pip install --quiet $(TORCH)
	.venv-latest/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[$(EXTRAS)]'
	.venv-latest/bin/python scripts/lockfile.py diff constraints.txt
	.venv-latest/bin/python -m pytest -q -x -m "not slow and not lock" || { \
	  echo "== fast tests failed on the newest allowed versions. What differs from the tested lock (no drift: the break is ours):"; \
	  .venv-latest/bin/python scripts/lockfile.py diff constraints.txt; \
	  .venv-latest/bin/lmms-ac doctor --quick; exit 1; }

# --overwrite replaces only an earlier demo's output: a DEMO_OUT folder the demo did not make is refused, never deleted
demo: env
	$(VENV)/bin/lmms-ac demo --out $(DEMO_OUT) --overwrite

doctor: env
	$(VENV)/bin/lmms-ac doctor

bench: env
	$(PY) bench/bench_plugin.py
	$(PY) bench/bench_score_c.py
	$(PY) bench/bench_law.py
	$(PY) bench/bench_prefix.py
	$(PY) bench/bench_robustness.py
	$(PY) bench/bench_task_index.py

clean:
	rm -rf $(VENV) .venv-lock .venv-latest out .pytest_cache
