# Quick start: `make demo` (set up, upscale examples/) and `make test` (set up, run tests).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# tpu-mlir's Python 3.10 environment (compile/tpu_env.sh): builds bmodels, runs the emulator.
TPU_VENV := .venv-tpu

.PHONY: setup tpu-env demo test lint

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

setup: $(VENV)/.installed

$(TPU_VENV)/.installed: requirements-tpu-mlir.txt batchsr/py310/glibc_fix.py compile/tpu_env.sh
	bash compile/tpu_env.sh $(TPU_VENV)

tpu-env: $(TPU_VENV)/.installed

demo: setup
	$(PY) run.py --model espcn --input examples/

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
