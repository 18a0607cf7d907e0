#!/usr/bin/env bash
# Compile the images' locks from requirements.lock (`make image-locks`):
#   docker/tagger.in   -> docker/requirements-tagger.lock
#   docker/pipeline.in -> docker/requirements-pipeline.lock
# requirements.lock is the constraint file: every package it pins keeps exactly that pin; only the
# CUDA wheels (nvidia-*) that onnxruntime-gpu[cuda,cudnn] / tensorflow[and-cuda] add are resolved
# here. An existing image lock is uv's preference, so recompiling moves nothing that need not move.
# requirements.overrides replaces musicnn's 2019 numpy/tensorflow pins, as for requirements.lock itself.
# --check: compile into a temporary folder and exit 1 when a lock differs (it is stale).
set -euo pipefail
cd "$(dirname "$0")/.."
uv="${UV:-$(command -v uv || echo .venv/bin/uv)}"
out=docker
if [ "${1:-}" = "--check" ]; then
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
    cp docker/requirements-tagger.lock docker/requirements-pipeline.lock "$out/"
fi
for image in tagger pipeline; do
    "$uv" pip compile "docker/$image.in" --constraint requirements.lock --override requirements.overrides --output-file "$out/requirements-$image.lock" \
        --python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command "make image-locks" --quiet
    if [ "$out" != docker ] && ! cmp -s "$out/requirements-$image.lock" "docker/requirements-$image.lock"; then
        diff "docker/requirements-$image.lock" "$out/requirements-$image.lock" >&2 || true
        echo "docker/requirements-$image.lock is stale: run make image-locks" >&2
        exit 1
    fi
done
