# syntax=docker/dockerfile:1
#
# Two images from one file; see docs/operations.md ("Container images") for what each runs and needs.
#
#   podman build --network host --target tagger   -t genretag-tagger .    (make image-test)
#       onnxruntime-gpu with its CUDA 13 + cuDNN 9 wheels, PyAV: catalog tagging and `predict` only.
#       Installs docker/requirements-tagger.lock. No TensorFlow.
#   podman build --network host --target pipeline -t genretag-pipeline .  (make image-test-pipeline)
#       TensorFlow with its CUDA 12 wheels: training, `dvc repro`, the Prefect worker and deployments.
#       Installs docker/requirements-pipeline.lock.
#
# Both locks are compiled from requirements.lock as constraints (make image-locks): every package
# keeps exactly the pin the tests ran; the nvidia-* CUDA user-space wheels are the only additions.
# No CUDA base image: the wheels carry the CUDA libraries, the host carries the driver
# (onnxruntime.preload_dlls() finds the wheels' libraries; genretag.onnx.session calls it).
#
# BASE is any Debian-family image with Python 3.11 and its venv module on PATH as python3:
# production builds take the public python:3.11-slim-bookworm; CI and this VM, where no image
# registry is reachable, build localhost/genretag-base:bookworm with docker/base-image.sh
# (mmdebstrap: Debian 12's Python 3.11, the host's CA certificates, SSL_CERT_FILE set).
# uv comes from PyPI at the version requirements.lock pins; Python is the base's, never downloaded.
# Both images run as the unprivileged user `genretag` (uid 10001) in /workspace; no secret is
# built in: credentials (AWS_*, MLFLOW_TRACKING_*, GENRETAG_CATALOG_URL, PREFECT_API_*) are
# passed at run time.
ARG BASE=docker.io/library/python:3.11-slim-bookworm

# ----------------------------------- uv from PyPI at the lock's pin, an empty venv on the base's Python
# UV_VERSION is requirements.lock's uv pin (docker/build-image.sh passes it; a test keeps this default
# equal to it). An argument, not the copied lock: editing the lock then rebuilds only what it changes.
FROM ${BASE} AS build
ARG UV_VERSION=0.13.8
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --quiet --no-cache-dir --no-deps "uv==${UV_VERSION}" \
    && ln -s /opt/uv/bin/uv /usr/local/bin/uv \
    && uv venv --quiet --python python3 /opt/venv

# ------------------------------------- genretag + flows alone, laid out to be copied over /opt/venv
# A code change rebuilds this small layer only; the locked packages' layers (GBs) stay cached.
FROM build AS app
COPY pyproject.toml README.md /src/
COPY src /src/src
COPY flows /src/flows
RUN uv pip install --quiet --python /opt/venv/bin/python --prefix /opt/app --no-deps /src \
    && rm -f /opt/app/.lock

# ------------------------------------------------------------------------------- tagger: CUDA 13
FROM build AS tagger-deps
COPY docker/requirements-tagger.lock /tmp/requirements-tagger.lock
# The cache mount keeps uv's downloads out of the layers and between builds on one machine.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip sync --quiet --python /opt/venv/bin/python /tmp/requirements-tagger.lock

FROM ${BASE} AS tagger
RUN groupadd --gid 10001 genretag \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash genretag \
    && install -d -o 10001 -g 10001 /workspace
COPY --from=tagger-deps /opt/venv /opt/venv
COPY --from=app /opt/app /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true
# The tagging settings (score.*, registry.model_name); mount another params.yaml to change them.
COPY --chown=10001:10001 params.yaml /workspace/params.yaml
USER 10001:10001
WORKDIR /workspace
RUN python -c "import sys, flows.tag_catalog, genretag.cli.app, genretag.registry.fetch, genretag.tagging.run, genretag.tagging.export, genretag.audio.decoding; \
assert not {'tensorflow', 'keras', 'tf2onnx'} & set(sys.modules), 'the tagger must not import TensorFlow'"
# e.g. podman run --device nvidia.com/gpu=all -v /catalog:/catalog:ro -e GENRETAG_CATALOG_URL \
#        -e MLFLOW_TRACKING_URI genretag-tagger genretag tag-catalog /catalog --require-gpu
CMD ["genretag", "tag-catalog", "--help"]

# ----------------------------------------------------------------------------- pipeline: CUDA 12
FROM build AS pipeline-deps
COPY docker/requirements-pipeline.lock /tmp/requirements-pipeline.lock
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip sync --quiet --python /opt/venv/bin/python /tmp/requirements-pipeline.lock

FROM ${BASE} AS pipeline
# git: DVC works in a git checkout of this repository (mounted or cloned at /workspace).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 genretag \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash genretag \
    && install -d -o 10001 -g 10001 /workspace
COPY --from=pipeline-deps /opt/venv /opt/venv
COPY --from=app /opt/app /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1 \
    DVC_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    TF_CPP_MIN_LOG_LEVEL=2
USER 10001:10001
WORKDIR /workspace
# `podman run ... genretag-pipeline dvc repro`, `... genretag deploy`, `... prefect worker start ...`
CMD ["genretag", "--help"]
