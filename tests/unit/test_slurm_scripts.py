"""slurm/*.sbatch outside Slurm: how each script builds the job's command from its variables
(containers, env file), run with bash and stand-ins for srun/apptainer/distil-jobs that print
what they were given (pyxis and Apptainer cannot run here)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((REPO / "slurm").glob("*.sbatch"))
ECHO = '#!/bin/bash\necho "{name} $*"\n[ -n "${{HF_TOKEN:-}}" ] && echo "{name} sees HF_TOKEN"\nexit 0\n'


def run_script(script: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("srun", "apptainer", "distil-jobs", "scontrol"):
        (bin_dir / name).write_text(ECHO.format(name=name))
        (bin_dir / name).chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "DISTIL_"))}
    full = {**base, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "node1",
            **env}
    return subprocess.run(["bash", str(script), "--config", "jobs/demo.yaml"], env=full, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_variable_a_script_reads_is_documented_in_its_header(script):
    text = script.read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    for name in sorted(set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", body))):
        assert name in header, f"{script.name} reads {name} but its header does not document it"


CONTAINERS = {
    "apptainer": ({"DISTIL_APPTAINER_SIF": "/img/distil.sif", "DISTIL_CONTAINER_MOUNTS": "/data:/data",
                   "SLURM_GPUS_ON_NODE": "1"},
                  r"apptainer exec --nv --bind /data:/data /img/distil.sif distil-jobs "),
    "pyxis": ({"DISTIL_CONTAINER_IMAGE": "nvcr.io#nvidia/pytorch:24.05-py3", "DISTIL_CONTAINER_MOUNTS": "/data:/data"},
              r"srun .*--container-image=nvcr.io#nvidia/pytorch:24.05-py3 --container-mounts=/data:/data distil-jobs "),
}


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_job_starts_inside_the_container(script, container, tmp_path):
    env, command = CONTAINERS[container]
    done = run_script(script, tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert re.search(command + r"[a-z-]+ --config jobs/demo.yaml", done.stdout), done.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_env_file_reaches_the_job_only_when_private(script, tmp_path):
    secret = "hf_" + os.urandom(8).hex()
    env_file = tmp_path / "secrets.env"
    env_file.write_text(f"HF_TOKEN={secret}\n")
    env_file.chmod(0o600)
    done = run_script(script, tmp_path, DISTIL_ENV_FILE=str(env_file))
    assert done.returncode == 0, done.stderr
    # The job's command sees it (train.sbatch: srun, which passes the environment on to the ranks).
    assert re.search(r"^(srun|distil-jobs) sees HF_TOKEN$", done.stdout, re.M), done.stdout
    assert secret not in done.stdout + done.stderr
    env_file.chmod(0o644)
    done = run_script(script, tmp_path, DISTIL_ENV_FILE=str(env_file))
    assert done.returncode == 2 and f"(mode 644): chmod 600 {env_file}" in done.stderr
    assert "distil-jobs" not in done.stdout


def test_both_containers_at_once_is_refused(tmp_path):
    done = run_script(REPO / "slurm" / "precompute.sbatch", tmp_path, DISTIL_APPTAINER_SIF="/a.sif",
                      DISTIL_CONTAINER_IMAGE="img")
    assert done.returncode == 2 and "pick one" in done.stderr
