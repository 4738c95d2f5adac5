# distil-jobs, CUDA image with flash-attn (for GPU nodes; not buildable on the CPU-only CI).
#   docker build -f images/gpu.Dockerfile -t distil-jobs:gpu --build-arg DISTIL_GIT_COMMIT=$(git rev-parse HEAD) .
# flash-attn compiles against the CUDA toolkit of the devel image; the runtime image only needs
# the CUDA runtime libraries, so the venv is built in devel and copied over.
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_DEVEL_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG FLASH_ATTN_VERSION=2.8.3
ARG EXTRAS=gpu,train,slurm,s3,eval,models,senses
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
COPY pyproject.toml README.md /src/
COPY distil_jobs /src/distil_jobs
RUN pip install "/src[${EXTRAS}]" && rm -rf /src/build

FROM ${CUDA_RUNTIME_IMAGE}
ARG DISTIL_GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="distil-jobs-gpu" \
      org.opencontainers.image.revision="${DISTIL_GIT_COMMIT}"
# TOKENIZERS_PARALLELISM trips the "sensitive data" rule by its name; it holds no secret.
# hadolint ignore=DL3064
ENV DISTIL_GIT_COMMIT=${DISTIL_GIT_COMMIT} \
    PATH=/opt/venv/bin:$PATH \
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
COPY --from=build /opt/venv /opt/venv
