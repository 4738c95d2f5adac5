# distil-jobs, CUDA image with flash-attn (for GPU nodes).
#   docker build -f images/gpu.Dockerfile -t distil-jobs:gpu --build-arg DISTIL_GIT_COMMIT=$(git rev-parse HEAD) .
# flash-attn compiles against the CUDA toolkit of the devel image; the runtime image only needs
# the CUDA runtime libraries, so the dependencies are installed in devel and copied over.
#
# Stages, in the order a builder meets them:
#   requirements, package   plain Python image, no CUDA: buildable anywhere
#                           (docker build -f images/gpu.Dockerfile --target package .)
#   deps, runtime           CUDA images: torch cu128, flash-attn (needs the nvidia/cuda images)
# Layers: as in the CPU Dockerfile, the dependencies (torch, flash-attn, ~6 GB) and the package
# (~1 MB) are separate layers of the runtime stage, so a code change ships only the small one.
# PYTHON_IMAGE must carry the runtime's Python version (Ubuntu 24.04: 3.12) so the package's
# byte code is the one the runtime uses.
ARG PYTHON_IMAGE=python:3.12-slim
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# Stage 1 (no CUDA): the requirements (dependencies + extras) from pyproject.toml, without the package.
FROM ${PYTHON_IMAGE} AS requirements
ARG EXTRAS=gpu,train,slurm,s3,eval,models,senses
COPY pyproject.toml images/requirements.py /src/
RUN python3 /src/requirements.py /src/pyproject.toml "${EXTRAS}" > /requirements.txt

# Stage 2 (no CUDA): the package alone (--no-deps) into /opt/distil, byte-compiled (pods run with a
# read-only root file system). Pure Python: built without the CUDA toolchain. Its console script
# runs /opt/venv/bin/python3, the interpreter of the runtime stage.
FROM ${PYTHON_IMAGE} AS package
ARG DISTIL_GIT_COMMIT=unknown
# Set to 1 to install only from images/wheels (no network): the package build needs setuptools.
ARG PIP_NO_INDEX=0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/wheels \
    PIP_NO_INDEX=${PIP_NO_INDEX}
RUN python3 -m venv /opt/venv
COPY images/wheels/ /wheels/
COPY pyproject.toml README.md /src/
COPY distil_jobs /src/distil_jobs
RUN /opt/venv/bin/pip install --no-deps --target /opt/distil /src \
    && echo "${DISTIL_GIT_COMMIT}" > /opt/distil/distil_jobs/GIT_COMMIT \
    && rm -rf /src/build \
    && grep -q '^#!/opt/venv/bin/python' /opt/distil/bin/distil-jobs

# Stage 3 (CUDA): the dependencies in /opt/venv.
FROM ${CUDA_DEVEL_IMAGE} AS deps
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG FLASH_ATTN_VERSION=2.8.3
# flash-attn's build runs this many compiler jobs; each needs several GB of RAM.
ARG MAX_JOBS=8
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive \
    MAX_JOBS=${MAX_JOBS}
# Ubuntu's package versions change with every CUDA base tag; the base image tag is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git ninja-build \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && pip install packaging==25.0 wheel==0.45.1 setuptools==80.9.0 psutil==7.1.0
RUN pip install --no-build-isolation "flash-attn==${FLASH_ATTN_VERSION}"
COPY --from=requirements /requirements.txt /requirements.txt
# The package lives in /opt/distil (its own layer); this .pth puts it on the venv's sys.path.
RUN pip install -r /requirements.txt \
    && python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > /tmp/purelib \
    && echo /opt/distil > "$(cat /tmp/purelib)/distil-jobs.pth" \
    && rm /tmp/purelib

# Stage 4 (CUDA): the runtime image.
FROM ${CUDA_RUNTIME_IMAGE} AS runtime
# TOKENIZERS_PARALLELISM trips the "sensitive data" rule by its name; it holds no secret.
# hadolint ignore=DL3064
ENV PATH=/opt/distil/bin:/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false \
    DISTIL_CACHE=/home/distil/.cache/distil-jobs \
    HF_HOME=/home/distil/.cache/huggingface \
    DISTIL_DATA_DIR=/data \
    DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin distil
USER 1000:1000
WORKDIR /home/distil
ENTRYPOINT ["distil-jobs"]
CMD ["--help"]
LABEL org.opencontainers.image.title="distil-jobs-gpu"
# Last on purpose, and nothing after them: on some storage drivers (vfs) every step after a large
# layer costs a full copy. Dependencies first (large, rarely change), then the package (small,
# changes with every commit, and carries the commit in distil_jobs/GIT_COMMIT for manifests).
# The revision label comes from `docker build --label` (scripts/docker-build.sh), not a step.
COPY --from=deps /opt/venv /opt/venv
COPY --from=package /opt/distil /opt/distil
