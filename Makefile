# Set-up from nothing: `make test` and `make demo` build the virtual environment first.
# TORCH pins the wheels that lie on this project's machines; override it for your CUDA build.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lmms-ac-installed
DEMO_OUT ?= out/demo

.PHONY: env test test-fast demo bench clean

env: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test,diffusion,bench]'
	touch $(STAMP)

test: env
	$(PY) -m pytest -q

test-fast: env
	$(PY) -m pytest -q -m "not slow"

demo: env
	$(VENV)/bin/lmms-ac demo --out $(DEMO_OUT) --overwrite

bench: env
	$(PY) bench/bench_plugin.py
	$(PY) bench/bench_score_c.py
	$(PY) bench/bench_law.py

clean:
	rm -rf $(VENV) out .pytest_cache
