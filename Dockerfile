# distil-jobs, CPU image.
#   docker build -t distil-jobs:cpu --build-arg DISTIL_GIT_COMMIT=$(git rev-parse HEAD) .
#   docker run --rm distil-jobs:cpu precompute-embeddings --help
# Offline builds: put every wheel into images/wheels (scripts/docker-build.sh does it with
# `pip wheel`) and pass --build-arg PIP_NO_INDEX=1 --network none. See images/README.md.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRAS=train,slurm,s3,eval,models,senses
# Set to 1 to install only from images/wheels (no network).
ARG PIP_NO_INDEX=0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/wheels \
    PIP_NO_INDEX=${PIP_NO_INDEX}
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY images/wheels/ /wheels/
# torch first, from the CPU index: the default index would pull the CUDA build (GBs of libraries).
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY distil_jobs /src/distil_jobs
RUN pip install "/src[${EXTRAS}]" && rm -rf /src/build

FROM ${BASE_IMAGE}
ARG DISTIL_GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="distil-jobs" \
      org.opencontainers.image.description="Batch jobs for knowledge distillation of text-embedding models" \
      org.opencontainers.image.revision="${DISTIL_GIT_COMMIT}"
# Manifests record this commit (there is no .git in the image). TOKENIZERS_PARALLELISM trips
# the "sensitive data" rule by its name; it holds no secret.
# hadolint ignore=DL3064
ENV DISTIL_GIT_COMMIT=${DISTIL_GIT_COMMIT} \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false \
    DISTIL_CACHE=/home/distil/.cache/distil-jobs \
    HF_HOME=/home/distil/.cache/huggingface \
    DISTIL_DATA_DIR=/data
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin distil
USER 1000:1000
WORKDIR /home/distil
ENTRYPOINT ["distil-jobs"]
CMD ["--help"]
# Last on purpose: every step after a large layer costs a full copy on some storage drivers (vfs).
COPY --from=build /opt/venv /opt/venv
