#!/usr/bin/env bash
# Make the local base image $GENRETAG_BASE (default localhost/genretag-base:bookworm) when it does not exist:
# Debian 12 (bookworm) with its Python 3.11 and python3-venv, made by mmdebstrap from the Debian mirror
# and imported with `podman import`. No registry of images is needed (none is reachable from CI).
# The host's extra CA certificates (/usr/local/share/ca-certificates) go into the image's trust store
# and SSL_CERT_FILE points at it: uv and pip inside a build then trust what the host trusts.
set -euo pipefail
image="${GENRETAG_BASE:-localhost/genretag-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
if podman image exists "$image"; then
    echo "base image $image exists"
    exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
mmdebstrap --quiet --variant=apt --include=ca-certificates,python3,python3-venv \
    --customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"' \
    --customize-hook='for crt in /usr/local/share/ca-certificates/*.crt; do [ -e "$crt" ] && cp "$crt" "$1/usr/local/share/ca-certificates/"; done; true' \
    --customize-hook='chroot "$1" update-ca-certificates' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    bookworm "$work/rootfs.tar" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"
podman import \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$work/rootfs.tar" "$image" >/dev/null
echo "built base image $image in $((SECONDS - start)) s ($(du -m "$work/rootfs.tar" | cut -f1) MB rootfs)"
