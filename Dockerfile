# syntax=docker/dockerfile:1
#
# Two images from one file; see docs/operations.md ("Docker") for what each runs and needs.
#
#   docker build --target pipeline -t genretag-pipeline .
#       TensorFlow 2.21 (CUDA 12.5, cuDNN 9): training, `dvc repro`, the Prefect deployments.
#       Every package of requirements.lock.
#   docker build --target tagger -t genretag-tagger .
#       onnxruntime-gpu 1.31 (CUDA 13, cuDNN 9): catalog tagging only. No TensorFlow.
#       docker/requirements-tagger.txt (a subset of the lock, same pins).
#
# TensorFlow 2.21 is built against CUDA 12, onnxruntime-gpu >= 1.27 against CUDA 13: each image
# takes exactly one CUDA runtime, from its nvidia/cuda base, and the pip packages bring none
# (the lock holds no nvidia-* wheels). In the pipeline image onnxruntime runs on the CPU (the
# export parity check); GPU scoring is the tagger's job.
#
# Python 3.11 comes from uv's standalone builds (the CUDA bases ship Ubuntu's 3.10 / 3.12).
# Both images run as the unprivileged user `genretag` (uid 10001) in /workspace; no secret is
# built in: credentials (AWS_*, MLFLOW_TRACKING_*, GENRETAG_CATALOG_URL, PREFECT_API_*) are
# passed at run time.

# ---------------------------------------------------------------------------------------- tools
FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

# ------------------------------------------------------------------ pipeline: the CUDA 12 world
FROM nvidia/cuda:12.5.1-cudnn-runtime-ubuntu22.04 AS pipeline-build
ARG PYTHON_VERSION=3.11.7
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN uv pip sync --python /opt/venv/bin/python /tmp/requirements.lock
COPY . /src
RUN uv pip install --python /opt/venv/bin/python --no-deps /src

FROM nvidia/cuda:12.5.1-cudnn-runtime-ubuntu22.04 AS pipeline
# git: DVC works in a git checkout of this repository (mounted or cloned at /workspace).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 genretag \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash genretag \
    && install -d -o 10001 -g 10001 /workspace
COPY --from=pipeline-build /opt/python /opt/python
COPY --from=pipeline-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1 \
    DVC_NO_ANALYTICS=1 \
    TF_CPP_MIN_LOG_LEVEL=2
USER 10001:10001
WORKDIR /workspace
# `docker run ... genretag-pipeline dvc repro`, `... genretag deploy`, `... prefect worker start ...`
CMD ["genretag", "--help"]

# ---------------------------------------------------------------------- tagger: the CUDA 13 world
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 AS tagger-build
ARG PYTHON_VERSION=3.11.7
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install "${PYTHON_VERSION}" \
    && uv venv --python "${PYTHON_VERSION}" /opt/venv
COPY docker/requirements-tagger.txt /tmp/requirements-tagger.txt
RUN uv pip sync --python /opt/venv/bin/python /tmp/requirements-tagger.txt
COPY . /src
RUN uv pip install --python /opt/venv/bin/python --no-deps /src \
    && /opt/venv/bin/python -c "import sys, flows.tag_catalog, genretag.registry, genretag.cli; \
assert not {'tensorflow', 'keras', 'tf2onnx'} & set(sys.modules), 'the tagger must not import TensorFlow'"

FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 AS tagger
RUN groupadd --gid 10001 genretag \
    && useradd --create-home --uid 10001 --gid 10001 --shell /bin/bash genretag \
    && install -d -o 10001 -g 10001 /workspace
COPY --from=tagger-build /opt/python /opt/python
COPY --from=tagger-build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=1
# The tagging settings (score.*, register.model_name); mount another params.yaml to change them.
COPY --chown=10001:10001 params.yaml /workspace/params.yaml
USER 10001:10001
WORKDIR /workspace
# e.g. docker run --gpus all -v /catalog:/catalog:ro -e GENRETAG_CATALOG_URL -e MLFLOW_TRACKING_URI \
#        genretag-tagger genretag tag-catalog /catalog --require-gpu
CMD ["genretag", "tag-catalog", "--help"]
