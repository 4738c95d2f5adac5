#!/usr/bin/env bash
# Build the CPU image without network access inside the build:
#   1. `pip wheel` every dependency (torch CPU included) into images/wheels on the host;
#   2. `docker build --network none` installs only from those wheels.
# The image has a dependency layer and a small package layer (see Dockerfile): after a code
# change only the package layer is rebuilt. Extra `docker build` arguments may follow TAG
# (e.g. --target deps).
#   scripts/docker-build.sh [TAG]      # TAG default distil-jobs:cpu
# BASE_IMAGE overrides the base (default python:3.11-slim; with no registry, make one with
# scripts/docker-base-image.sh). Needs DOCKER_HOST or a system Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-distil-jobs:cpu}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
EXTRAS=${EXTRAS:-train,slurm,s3,eval,models,senses}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
PYTHON=${PYTHON:-python3}
mkdir -p images/wheels
# --find-links images/wheels: wheels already there are reused byte for byte, so a rerun does not
# change the build context of the dependency layer (a rebuilt sdist wheel would, and bust its cache).
"$PYTHON" -m pip wheel -q --find-links images/wheels --wheel-dir images/wheels "torch==$TORCH_VERSION" ".[$EXTRAS]"
rm -f images/wheels/distil_jobs-*.whl   # the image installs the package from the source tree
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
docker build --network none --build-arg PIP_NO_INDEX=1 --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --build-arg "TORCH_VERSION=$TORCH_VERSION" --build-arg "EXTRAS=$EXTRAS" \
  --build-arg "DISTIL_GIT_COMMIT=$COMMIT" --label "org.opencontainers.image.revision=$COMMIT" \
  -t "$TAG" "${@:2}" .
echo "docker-build: built $TAG (commit $COMMIT, base $BASE_IMAGE)"
