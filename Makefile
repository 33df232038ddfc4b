# Quick start: `make demo` (set up, upscale examples/) and `make tpu-env && make test` (set up both
# environments, run every test, the real tpu-mlir and emulator ones included).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# tpu-mlir's Python 3.10 environment (compile/tpu_env.sh): builds bmodels, runs the emulator.
TPU_VENV := .venv-tpu

.PHONY: setup ray-env tpu-env demo test test-fast lint

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# batchsr's C kernels (batchsr/csrc: NIQE, the colour merge), built in place. Without a C
# compiler the build is skipped with a warning: the numpy paths run instead, slower.
$(VENV)/.native-built: $(VENV)/.installed setup.py $(wildcard batchsr/csrc/*)
	@if $(PY) setup.py -q build_ext --inplace; then touch $@; else \
		echo "batchsr: the C kernels were not built (is a C compiler installed?);" \
			"NIQE and the colour merge run their numpy paths, 2-4x slower"; fi

setup: $(VENV)/.installed $(VENV)/.native-built

# Ray, for --cluster and its tests (an optional extra: a run without --cluster never
# imports it).
$(VENV)/.ray-installed: $(VENV)/.installed requirements-ray.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-ray.txt
	touch $@

ray-env: $(VENV)/.ray-installed

$(TPU_VENV)/.installed: requirements-tpu-mlir.txt batchsr/py310/glibc_fix.py compile/tpu_env.sh
	bash compile/tpu_env.sh $(TPU_VENV)

tpu-env: $(TPU_VENV)/.installed

demo: setup
	$(PY) run.py --model espcn --input examples/

# Tests start run.py in many subprocesses: let them cache bytecode even where the
# environment says not to (PYTHONDONTWRITEBYTECODE; measured: test-fast 93 s -> 85 s).
CACHE_BYTECODE := PYTHONDONTWRITEBYTECODE=

# Without .venv-tpu the tpu-mlir tests skip, saying to run `make tpu-env`.
test: setup ray-env
	$(CACHE_BYTECODE) $(PY) -m pytest -q

# The inner loop: everything not marked slow (no tpu-mlir builds, no emulator).
test-fast: setup
	$(CACHE_BYTECODE) $(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
