"""The CPU image, built and run for real with a private dockerd (scripts/dockerd-up.sh).

The build installs ~570 MB of wheels: about 4 min for the whole module on overlay2, which
scripts/dockerd-up.sh uses wherever an overlay mounts, but 19 min on the vfs fallback (numbers in
images/README.md), which is why it carries the `slow` marker too.
The base image is made locally with mmdebstrap (scripts/docker-base-image.sh): no registry is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.server,
    pytest.mark.slow,
]

REPO = Path(__file__).resolve().parents[2]
TAG = "distil-jobs:cpu-test"
BASE = "local/debian-python:bookworm"


def sh(*cmd: str, env: dict[str, str], timeout: int = 1200) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    base = Path(tempfile.mkdtemp(prefix="distil-docker-", dir="/tmp"))
    up = subprocess.run([str(REPO / "scripts" / "dockerd-up.sh"), str(base)], capture_output=True, text=True,
                        timeout=300, check=False)
    if up.returncode == 3:
        pytest.skip(f"Docker is not installed and apt-get could not install it: {up.stderr.strip()}")
    assert up.returncode == 0, up.stderr
    env = {**os.environ, "DOCKER_HOST": f"unix://{base}/docker.sock"}
    try:
        yield env
    finally:
        subprocess.run([str(REPO / "scripts" / "dockerd-down.sh"), str(base), "--purge"], capture_output=True,
                       timeout=300, check=False)


@pytest.fixture(scope="module")
def image(docker_env: dict[str, str]) -> str:
    sh(str(REPO / "scripts" / "docker-base-image.sh"), BASE, env=docker_env)
    sh(str(REPO / "scripts" / "docker-build.sh"), TAG, env={**docker_env, "BASE_IMAGE": BASE})
    return TAG


def test_image_resolves_a_config_offline(image, docker_env, data_path):
    done = sh("docker", "run", "--rm", "--network", "none", "-v", f"{data_path}:/data:ro", image,
              "precompute-embeddings", "--input", "/data/menyo20k/train.jsonl", "--output", "/out/x",
              "--text-column", "en", "--dry-run", env=docker_env)
    assert "input: /data/menyo20k/train.jsonl  # flag" in done.stdout


def test_image_embeds_rows_as_a_non_root_user_and_records_the_commit(image, docker_env, data_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the container runs as uid 1000
    sh("docker", "run", "--rm", "--network", "none", "-e", "HF_HUB_OFFLINE=1", "-v", f"{data_path}:/data:ro",
       "-v", f"{out}:/out", image, "precompute-embeddings", "--input", "/data/menyo20k/train.jsonl",
       "--max-rows", "64", "--text-column", "en", "--max-length", "32", "--output", "/out/emb", env=docker_env)
    manifest = json.loads((out / "emb" / "manifest.json").read_text())
    assert manifest["rows"] == 64
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert manifest["code"]["git_commit"] == (commit or "unknown")
    assert (out / "emb" / "manifest.json").stat().st_uid == 1000


def test_the_package_is_a_small_layer_of_its_own_above_the_dependencies(image, docker_env):
    """A code change rebuilds and ships only the top layer (measured numbers: images/README.md)."""
    history = sh("docker", "history", "--no-trunc", "--format", "{{.Size}}|{{.CreatedBy}}", image,
                 env=docker_env).stdout.splitlines()
    layers = [(size, step) for size, step in (line.split("|", 1) for line in history) if size not in ("0B", "0")]
    (pkg_size, pkg_step), (deps_size, deps_step) = layers[0], layers[1]
    assert "/opt/distil" in pkg_step and "/opt/venv" in deps_step
    units = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}

    def size(text: str) -> float:
        number = text.rstrip("kMGB")
        return float(number) * units[text[len(number):]]

    assert size(pkg_size) < 20e6 < 500e6 < size(deps_size)
