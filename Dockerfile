# distil-jobs, CPU image.
#   docker build -t distil-jobs:cpu --build-arg DISTIL_GIT_COMMIT=$(git rev-parse HEAD) .
#   docker run --rm distil-jobs:cpu precompute-embeddings --help
# Offline builds: put every wheel into images/wheels (scripts/docker-build.sh does it with
# `pip wheel`) and pass --build-arg PIP_NO_INDEX=1 --network none. See images/README.md.
#
# Layers: the dependencies (torch & co., ~1 GB) and the package (~1 MB) are separate layers of
# the runtime stage, dependencies first. A code change rebuilds and ships only the package layer;
# the dependency layer is rebuilt only when the requirements derived from pyproject.toml change.
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: the requirements (dependencies + extras) from pyproject.toml, without the package.
# COPY --from of the result is cached by content: editing pyproject.toml elsewhere (version,
# tool settings) keeps the dependency layer.
FROM ${BASE_IMAGE} AS requirements
ARG EXTRAS=train,slurm,s3,eval,models,senses
COPY pyproject.toml images/requirements.py /src/
RUN python3 /src/requirements.py /src/pyproject.toml "${EXTRAS}" > /requirements.txt

# Stage 2: the dependencies in /opt/venv.
FROM ${BASE_IMAGE} AS deps
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
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
COPY --from=requirements /requirements.txt /requirements.txt
# The package lives in /opt/distil (its own layer); this .pth puts it on the venv's sys.path.
RUN pip install -r /requirements.txt \
    && python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > /tmp/purelib \
    && echo /opt/distil > "$(cat /tmp/purelib)/distil-jobs.pth" \
    && rm /tmp/purelib

# Stage 3: the package alone (--no-deps) into /opt/distil, byte-compiled: pods run with a
# read-only root file system, so Python could not write the .pyc files itself.
FROM deps AS package
ARG DISTIL_GIT_COMMIT=unknown
COPY pyproject.toml README.md /src/
COPY distil_jobs /src/distil_jobs
RUN pip install --no-deps --target /opt/distil /src \
    && echo "${DISTIL_GIT_COMMIT}" > /opt/distil/distil_jobs/GIT_COMMIT \
    && rm -rf /src/build \
    && PATH=/opt/distil/bin:$PATH distil-jobs --version

# Stage 4: the runtime image.
FROM ${BASE_IMAGE} AS runtime
# TOKENIZERS_PARALLELISM trips the "sensitive data" rule by its name; it holds no secret.
# hadolint ignore=DL3064
ENV PATH=/opt/distil/bin:/opt/venv/bin:$PATH \
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
LABEL org.opencontainers.image.title="distil-jobs" \
      org.opencontainers.image.description="Batch jobs for knowledge distillation of text-embedding models"
# Last on purpose, and nothing after them: on some storage drivers (vfs) every step after a large
# layer costs a full copy. Dependencies first (large, rarely change), then the package (small,
# changes with every commit, and carries the commit in distil_jobs/GIT_COMMIT for manifests).
# The revision label comes from `docker build --label` (scripts/docker-build.sh), not a step.
COPY --from=deps /opt/venv /opt/venv
COPY --from=package /opt/distil /opt/distil
