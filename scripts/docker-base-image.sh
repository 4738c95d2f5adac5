#!/usr/bin/env bash
# Make a local Debian 12 + Python 3.11 base image when no registry is reachable (Debian mirror
# via apt only). ~30 s, ~210 MB. Then: BASE_IMAGE=local/debian-python:bookworm scripts/docker-build.sh
set -euo pipefail
TAG=${1:-local/debian-python:bookworm}
command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >/dev/null
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates bookworm - | docker import - "$TAG"
echo "docker-base-image: $TAG"
