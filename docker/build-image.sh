#!/usr/bin/env bash
# Build one target of the Dockerfile with podman: docker/build-image.sh tagger|pipeline IMAGE
# BASE defaults to the local mmdebstrap base (made by docker/base-image.sh when missing); set
# BASE=docker.io/library/python:3.11-slim-bookworm where Docker Hub is reachable.
# Prints the build time and the image size (the figures in docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")/.."
target="$1"
image="$2"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/docker/containers.conf}"
base="${BASE:-${GENRETAG_BASE:-localhost/genretag-base:bookworm}}"
if [ "$base" = "${GENRETAG_BASE:-localhost/genretag-base:bookworm}" ]; then
    GENRETAG_BASE="$base" docker/base-image.sh
fi
start=$SECONDS
# --network host: the build reaches PyPI (and Debian's mirror for the pipeline's git) through the host.
uv_version="$(sed -n 's/^uv==//p' requirements.lock)"
podman build --network host --build-arg "BASE=$base" --build-arg "UV_VERSION=$uv_version" --target "$target" -t "$image" .
size="$(podman image inspect --format '{{.Size}}' "$image")"
echo "built $image (target $target, base $base) in $((SECONDS - start)) s, $((size / 1000000)) MB"
