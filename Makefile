# Two entry points for a fresh machine: `make demo` (the pipeline on the demo corpus) and `make test`.
# Both create .venv and install the locked dependencies first when missing or out of date.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.genretag-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test bench lint clean-outputs

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

demo: $(STAMP)  ## dvc repro on the built-in (synthetic) demo corpus, end to end
	python -m flows.server dvc repro  # one Prefect server for every stage
	dvc metrics show

test: $(STAMP)  ## the whole test suite
	python -m pytest

bench: $(STAMP)  ## spectrogram, training and scoring benchmarks (printed tables)
	python bench/spectrograms.py
	python bench/train.py
	python bench/score.py

lint: $(STAMP)  ## Dockerfile lint
	hadolint Dockerfile
