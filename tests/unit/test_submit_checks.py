"""`distil-jobs submit` refuses bad launches before anything is submitted (one line, exit 2), and
renders exactly what it will submit: the absolute log folder, chains, containers, env files."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("submitit")

RENDER = ("submit", "--render", "--job", "precompute-embeddings")
JOB = ("--", "--input", "in.jsonl", "--output", "out")


@pytest.mark.parametrize(("flags", "message"), [
    (["--time-min", "0"], "--time-min 0: must be at least 1 (Slurm reads 0 as no limit)"),
    (["--mem-gb", "0.0001"], "--mem-gb 0.0001: must be at least 1 MB"),
    (["--mem-gb", "nan"], "--mem-gb nan: must be at least 1 MB"),
    (["--mem-gb", "100000"], "--mem-gb 100000.0: more than 65536 GB per node; the value is in GB"),
    (["--nodes", "0"], "--nodes 0: must be at least 1"),
    (["--cpus-per-task", "0"], "--cpus-per-task 0: must be at least 1"),
    (["--tasks-per-node", "0"], "--tasks-per-node 0: must be at least 1"),
    (["--gpus-per-node", "-1"], "--gpus-per-node -1: must be 0 or more"),
    (["--array", "0"], "--array 0: must be at least 1"),
    (["--array", "2", "--array-parallelism", "0"], "--array-parallelism 0: must be at least 1"),
    (["--array-parallelism", "2"], "--array-parallelism applies to an array: add --array N"),
    (["--time-min", "1", "--signal-delay-s", "120"], "--signal-delay-s 120: the pre-timeout signal must come"),
    (["--dependency", "afterok"], "--dependency 'afterok': use Slurm's form, e.g. afterok:1234"),
    (["--container-image", "img", "--apptainer", "x.sif"], "both given: pick one"),
    (["--apptainer", "/nonexistent/distil.sif"], "--apptainer /nonexistent/distil.sif: no such image file"),
    (["--container-mounts", "/data:/data"], "--container-mounts needs --container-image or --apptainer"),
])
def test_bad_resources_are_one_line_and_exit_2(flags, message):
    from click.testing import CliRunner

    from distil_jobs.cli import main

    done = CliRunner().invoke(main, [*RENDER, *flags, *JOB])  # in-process: no interpreter start per case
    assert done.exit_code == 2, done.output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert "#SBATCH" not in done.stdout


def test_unknown_job_options_fail_before_submitting(cli, tmp_path):
    done = cli("submit", "--job", "precompute-embeddings", "--folder", str(tmp_path / "logs"), "--",
               "--input", "in.jsonl", "--output", str(tmp_path / "o"), "--no-such-flag", "1")
    assert done.returncode == 2 and "the precompute-embeddings flags do not resolve" in done.stderr
    assert "--no-such-flag" in done.stderr and not (tmp_path / "logs").exists()


def test_render_shows_the_absolute_log_folder_submitit_uses(tmp_path):
    done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", *RENDER, "--folder", "rel-logs/%j", *JOB],
                          cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    folder = f"{tmp_path}/rel-logs/%j"
    assert f"#SBATCH --output={folder}/%j_0_log.out" in done.stdout
    assert f"-m submitit.core._submit {folder}" in done.stdout and f"# logs: {folder}" in done.stdout


def test_render_chains_with_dependency_and_qos(cli):
    done = cli(*RENDER, "--dependency", "afterok:123:124", "--qos", "high", *JOB)
    assert "#SBATCH --dependency=afterok:123:124" in done.stdout and "#SBATCH --qos=high" in done.stdout


def test_pyxis_runs_submitit_inside_the_image_with_its_folder_mounted(cli, tmp_path):
    done = cli(*RENDER, "--container-image", "nvcr.io#nvidia/pytorch:24.05-py3", "--container-mounts",
               "/data:/data:ro", "--folder", str(tmp_path / "logs/%j"), *JOB)
    assert done.returncode == 0, done.stderr
    srun = next(line for line in done.stdout.splitlines() if line.startswith("srun "))
    assert "--container-image=nvcr.io#nvidia/pytorch:24.05-py3" in srun
    assert f"--container-mounts={tmp_path}/logs:{tmp_path}/logs,/data:/data:ro" in srun
    assert srun.endswith(f"python3 -u -m submitit.core._submit {tmp_path}/logs/%j")  # the image's Python


def test_apptainer_wraps_the_job_and_adds_nv_with_gpus(cli, tmp_path):
    sif = tmp_path / "distil.sif"
    sif.write_bytes(b"")
    done = cli(*RENDER, "--apptainer", str(sif), "--container-mounts", "/data", *JOB)
    assert f"# task: exec --bind /data {sif} distil-jobs precompute-embeddings --input in.jsonl" in done.stdout
    assert "srun --unbuffered --output" in done.stdout and shlex.quote(sys.executable) in done.stdout  # host Python
    done = cli("submit", "--render", "--job", "train-student", "--gpus-per-node", "2", "--apptainer", str(sif), "--")
    assert f"# task: exec --nv {sif} distil-jobs train-student" in done.stdout


def secrets_file(tmp_path: Path, mode: int) -> tuple[Path, str]:
    secret = "hf_" + os.urandom(8).hex()
    path = tmp_path / "secrets.env"
    path.write_text(f"# tokens\nexport HF_TOKEN={secret}\nWANDB_API_KEY='{secret}w'\n")
    path.chmod(mode)
    return path, secret


def test_env_file_must_be_private(cli, tmp_path):
    path, secret = secrets_file(tmp_path, 0o644)
    done = cli(*RENDER, "--env-file", str(path), *JOB)
    assert done.returncode == 2 and f"is readable by others (mode 644): chmod 600 {path}" in done.stderr
    assert secret not in done.stderr + done.stdout


def test_env_file_values_stay_out_of_the_script_and_the_pickle(cli, tmp_path):
    import cloudpickle

    from distil_jobs.launch.envfile import read_env_file
    from distil_jobs.launch.slurm import LaunchSpec

    path, secret = secrets_file(tmp_path, 0o600)
    assert read_env_file(path) == {"HF_TOKEN": secret, "WANDB_API_KEY": f"{secret}w"}
    done = cli(*RENDER, "--env-file", str(path), *JOB)
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout
    call = LaunchSpec("precompute-embeddings", ("--output", "o"), env_file=str(path)).calls()[0]
    assert secret.encode() not in cloudpickle.dumps(call) and secret not in repr(call)


def test_a_malformed_env_file_line_is_named_by_number_only(cli, tmp_path):
    path = tmp_path / "bad.env"
    path.write_text("HF_TOKEN=ok\nthis is secret-ish text\n")
    path.chmod(0o600)
    done = cli(*RENDER, "--env-file", str(path), *JOB)
    assert done.returncode == 2 and re.search(r"line 2 is not KEY=VALUE$", done.stderr.strip())
    assert "secret-ish" not in done.stderr
