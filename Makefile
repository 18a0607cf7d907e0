# Two entry points for a fresh machine: `make demo` (the pipeline on the demo corpus) and `make test`.
# `make test-fast` is the inner loop: no server, no Keras training, no dvc repro, no podman/node/chromium/PostgreSQL.
# `make image-test` / `make image-test-pipeline` build and run the container images with podman.
# Both create .venv and install the locked dependencies first when missing or out of date.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.genretag-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup demo test test-fast bench lint clean-outputs image-tools image-locks image-test image-test-pipeline

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip --upgrade >/dev/null
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $@

# The report assets (Data Docs' Bootstrap/jQuery/font-awesome, DVC's vega), pinned by npm's lock, so
# that every HTML report opens offline (genretag.data.web_assets); then DVC's plots template (.dvc/plots.html).
WEB_DIR      := src/genretag/data/web
WEB_STAMP    := $(WEB_DIR)/node_modules/.package-lock.json
DVC_TEMPLATE := .dvc/plots.html
$(WEB_STAMP): $(WEB_DIR)/package.json $(WEB_DIR)/package-lock.json
	npm ci --no-audit --no-fund --prefix $(WEB_DIR)
	touch $@
$(DVC_TEMPLATE): $(WEB_STAMP) $(STAMP) src/genretag/data/web_assets.py
	python -m genretag.data.web_assets --dvc-template $@
SETUP := $(STAMP) $(DVC_TEMPLATE)

setup: $(SETUP)  ## the venv, the report assets (npm ci) and DVC's offline plots template

demo: $(SETUP)  ## dvc repro on the built-in (synthetic) demo corpus, end to end
	python -m flows.server dvc repro  # one Prefect server for every stage
	dvc metrics show

test: $(SETUP)  ## the whole test suite (what CI runs)
	python -m pytest

# The heavy tiers (pyproject.toml's markers; tests/conftest.py adds server/postgres/dvc from fixtures).
HEAVY := slow or server or postgres or keras or dvc or image or node or browser
test-fast: $(SETUP)  ## the suite without the heavy tiers (HEAVY): minutes, for the inner loop
	python -m pytest -m "not ($(HEAVY))"

bench: $(STAMP)  ## spectrogram, training and scoring benchmarks (printed tables)
	python bench/spectrograms.py
	python bench/train.py
	python bench/score.py

lint: $(STAMP)  ## Dockerfile lint
	hadolint Dockerfile

# --- container images (podman; see docs/operations.md, "Container images") ---
TAGGER_IMAGE   ?= localhost/genretag-tagger:test
PIPELINE_IMAGE ?= localhost/genretag-pipeline:test
IMAGE_PACKAGES := podman runc mmdebstrap
image-test image-test-pipeline: export CONTAINERS_CONF := $(abspath docker/containers.conf)

image-tools:  ## podman, runc and mmdebstrap from Debian's apt when missing (CI: root; else sudo)
	@dpkg -s $(IMAGE_PACKAGES) >/dev/null 2>&1 || { sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(IMAGE_PACKAGES); }

image-locks: $(STAMP)  ## docker/requirements-{tagger,pipeline}.lock from requirements.lock (+ the CUDA wheels)
	docker/compile-locks.sh

image-test: $(STAMP) image-tools  ## build the tagger image (and the local base when missing) and run it
	docker/build-image.sh tagger $(TAGGER_IMAGE)
	GENRETAG_TAGGER_IMAGE=$(TAGGER_IMAGE) python -m pytest -m image tests/pipeline/test_images.py -k "not pipeline_image" -p no:cacheprovider

image-test-pipeline: $(STAMP) image-tools  ## build the pipeline image and run `dvc repro` on the tiny demo in it
	docker/build-image.sh pipeline $(PIPELINE_IMAGE)
	GENRETAG_PIPELINE_IMAGE=$(PIPELINE_IMAGE) python -m pytest -m image tests/pipeline/test_images.py -k "pipeline_image" -p no:cacheprovider
