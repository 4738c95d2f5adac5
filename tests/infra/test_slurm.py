"""precompute-embeddings on a real Slurm (loopback cluster from scripts/slurm-up.sh): a 2-task array,
once with slurm/precompute.sbatch and once through `distil-jobs submit` (submitit). Both must end
with a manifest and exactly the rows of a one-shard local run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import head_jsonl

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[2]
JOB_FLAGS = ["--teacher", "minilm", "--text-column", "en", "--pair-column", "yo", "--max-length", "32",
             "--chunk-rows", "30"]
ROWS = 200
# The loopback node has few cores: ask for 1 CPU and 2 GB per task so both array tasks run at once.
SMALL = ["--cpus-per-task=1", "--mem=2G"]


@pytest.fixture(scope="module")
def menyo_rows(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path_factory.mktemp("in") / "train.jsonl", ROWS)


@pytest.fixture(scope="module")
def one_shard_rows(menyo_rows: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("local") / "emb"
    run_cli("precompute-embeddings", "--input", str(menyo_rows), "--output", str(out), *JOB_FLAGS, check=True)
    return read_rows(out)


def read_rows(out: Path) -> dict[str, list]:
    return pq.read_table(sorted((out / "data").glob("*.parquet"))).to_pydict()


def wait_for_job(job_id: str, timeout: float = 600) -> list[str]:
    """Wait until every task of the job has left the queue; their ExitCodes (no sacct needed:
    slurmctld keeps finished jobs for MinJobAge seconds). `sbatch --wait` polls far more slowly."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip():
            break
        time.sleep(0.5)
    else:
        raise TimeoutError(f"Slurm job {job_id} still queued or running after {timeout} s")
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True)
    return [field.split("=", 1)[1] for line in shown.stdout.splitlines() for field in line.split()
            if field.startswith("ExitCode=")]


def assert_complete_two_shard_artifact(out: Path, expected: dict[str, list]) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == ROWS and manifest["extra"]["shards"] == 2
    got = read_rows(out)
    assert got["row_idx"] == expected["row_idx"] == list(range(ROWS))
    assert got["en"] == expected["en"] and got["yo"] == expected["yo"]
    np.testing.assert_allclose(np.asarray(got["teacher_embedding_final"], dtype=np.float32),
                               np.asarray(expected["teacher_embedding_final"], dtype=np.float32), atol=2e-3)
    assert sorted(p.name for p in (out / "_shards").glob("*.done")) == [
        "shard-00000-of-00002.done", "shard-00001-of-00002.done"]


def test_sbatch_array_script_runs_one_shard_per_task(slurm_cluster, menyo_rows, one_shard_rows, tmp_path):
    out, logs = tmp_path / "emb", tmp_path / "logs"
    logs.mkdir()
    submitted = subprocess.run(["sbatch", "--parsable", "--array=0-1", *SMALL, f"--output={logs}/%x-%A_%a.out",
                                str(REPO / "slurm" / "precompute.sbatch"), "--input", str(menyo_rows),
                                "--output", str(out), *JOB_FLAGS],
                               capture_output=True, text=True, timeout=60, check=True)
    exit_codes = wait_for_job(submitted.stdout.strip().split(";")[0])
    task_logs = {p.name: p.read_text() for p in logs.glob("*.out")}
    assert exit_codes == ["0:0", "0:0"], task_logs
    assert len(task_logs) == 2
    assert all("shard" in text and "Traceback" not in text for text in task_logs.values())
    assert_complete_two_shard_artifact(out, one_shard_rows)


def test_submit_command_runs_a_two_task_array_through_submitit(slurm_cluster, cli, menyo_rows, one_shard_rows,
                                                              tmp_path):
    out, folder = tmp_path / "emb", tmp_path / "submitit"
    done = cli("submit", "--backend", "slurm", "--job", "precompute-embeddings", "--array", "2",
               "--cpus-per-task", "1", "--mem-gb", "2", "--time-min", "30", "--folder", f"{folder}/%j", "--wait",
               "--", "--input", str(menyo_rows), "--output", str(out), *JOB_FLAGS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 task(s)" in done.stdout and done.stdout.count("precompute-embeddings: done") == 2
    assert_complete_two_shard_artifact(out, one_shard_rows)

    # What went to sbatch is exactly what `submit --render` shows.
    from distil_jobs.launch.slurm import LaunchSpec, render_sbatch

    submitted = next(folder.glob("*/*_submission.sh")).read_text()
    spec = LaunchSpec("precompute-embeddings", array=2, cpus_per_task=1, mem_gb=2, timeout_min=30)
    assert submitted == render_sbatch(spec, f"{folder}/%j", python=sys.executable)


def test_submit_with_bad_job_flags_fails_before_reaching_the_queue(slurm_cluster, cli, tmp_path):
    done = cli("submit", "--job", "precompute-embeddings", "--array", "2", "--folder", str(tmp_path / "s"),
               "--", "--output", str(tmp_path / "o"), "--output-type", "everything")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: the precompute-embeddings flags do not resolve")
    assert not (tmp_path / "s").exists()


def test_train_script_requeues_a_job_that_exits_75(slurm_cluster, tmp_path):
    """The exit-code contract of slurm/train.sbatch on a real Slurm: 75 ("preempted, state saved")
    requeues the job, which then runs again with SLURM_RESTART_COUNT=1. A stand-in command takes
    the place of train-student (DISTIL_CMD), which has its own preemption tests."""
    job = tmp_path / "stand-in.sh"
    job.write_text('#!/bin/bash\necho "ran $* restart=${SLURM_RESTART_COUNT:-0} node=$SLURM_NODEID"\n'
                   '[ "${SLURM_RESTART_COUNT:-0}" = 0 ] && exit 75\nexit 0\n')
    job.chmod(0o755)
    log = tmp_path / "train.out"
    submitted = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--cpus-per-task=1", "--mem=1G",
                                "--gpus-per-node=0", f"--output={log}", str(REPO / "slurm" / "train.sbatch"),
                                "--config", "train.yaml"],
                               env={**os.environ, "DISTIL_CMD": str(job)}, capture_output=True, text=True,
                               timeout=60, check=True)
    job_id = submitted.stdout.strip()
    deadline = time.time() + 300
    state = ""
    while time.time() < deadline and state not in ("COMPLETED", "FAILED", "CANCELLED"):
        time.sleep(0.5)
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
        state = next((f.split("=", 1)[1] for f in shown.split() if f.startswith("JobState=")), "")
    assert state == "COMPLETED", log.read_text()
    text = log.read_text()
    assert "ran train-student --config train.yaml restart=0" in text
    assert "requeueing job" in text
    assert "ran train-student --config train.yaml restart=1" in text


def sbatch_precompute(logs: Path, array: str, rows: Path, out: Path, *extra: str) -> str:
    submitted = subprocess.run(["sbatch", "--parsable", f"--array={array}", *SMALL, f"--output={logs}/%x-%A_%a.out",
                                str(REPO / "slurm" / "precompute.sbatch"), "--input", str(rows), "--output", str(out),
                                *JOB_FLAGS, *extra], capture_output=True, text=True, timeout=60, check=True)
    return submitted.stdout.strip().split(";")[0]


def test_the_documented_single_shard_rerun_fills_exactly_the_missing_shard(slurm_cluster, menyo_rows,
                                                                            one_shard_rows, tmp_path):
    """`sbatch --array=1 slurm/precompute.sbatch ... --num-shards 2` after only shard 0 was done."""
    out, logs = tmp_path / "emb", tmp_path / "logs"
    logs.mkdir()
    assert wait_for_job(sbatch_precompute(logs, "0", menyo_rows, out, "--num-shards", "2")) == ["0:0"]
    assert [p.name for p in (out / "_shards").glob("*.done")] == ["shard-00000-of-00002.done"]
    assert not (out / "manifest.json").exists()
    first = {p.name: p.stat().st_mtime_ns for p in (out / "data").glob("*.parquet")}

    assert wait_for_job(sbatch_precompute(logs, "1", menyo_rows, out, "--num-shards", "2")) == ["0:0"]
    assert_complete_two_shard_artifact(out, one_shard_rows)
    assert all((out / "data" / name).stat().st_mtime_ns == t for name, t in first.items())  # shard 0 untouched


def test_submit_to_an_unknown_partition_is_refused_before_the_queue(slurm_cluster, cli, tmp_path):
    done = cli("submit", "--job", "precompute-embeddings", "--partition", "gpu-h100", "--folder",
               str(tmp_path / "s"), "--", "--input", "x.jsonl", "--output", str(tmp_path / "o"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == ("error: --partition gpu-h100: no such partition on this cluster "
                                                    "(sinfo lists debug): pass one of them")
    assert not (tmp_path / "s").exists()


def test_pyxis_is_refused_on_a_cluster_without_it(slurm_cluster, cli, tmp_path):
    done = cli("submit", "--job", "precompute-embeddings", "--container-image", "distil-jobs:cpu", "--folder",
               str(tmp_path / "s"), "--", "--input", "x.jsonl", "--output", str(tmp_path / "o"))
    assert done.returncode == 2 and "--container-image needs the pyxis plugin" in done.stderr
    assert not (tmp_path / "s").exists()


def test_env_file_secrets_reach_the_job_and_nothing_else(slurm_cluster, s3_server, menyo_rows, tmp_path):
    """The S3 keys only in an --env-file (mode 600): the job on Slurm writes to S3 with them, and
    neither the submitted script nor submitit's pickles nor the logs hold them."""
    env_file = tmp_path / "secrets.env"
    env_file.write_text(f"AWS_ACCESS_KEY_ID={s3_server.access_key}\nAWS_SECRET_ACCESS_KEY={s3_server.secret_key}\n")
    env_file.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    folder, out = tmp_path / "submitit", s3_server.uri("envfile/emb")
    done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", "submit", "--job", "precompute-embeddings",
                           "--cpus-per-task", "1", "--mem-gb", "2", "--time-min", "30", "--env-file", str(env_file),
                           "--folder", f"{folder}/%j", "--wait", "--", "--input", str(menyo_rows), "--output", out,
                           "--max-rows", "60", *JOB_FLAGS],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = subprocess.run([sys.executable, "-m", "distil_jobs.cli", "inspect", out], capture_output=True, text=True,
                           check=True)
    assert json.loads(shown.stdout)["rows"] == 60
    written = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.name.endswith("_submission.sh") for p in written) and any(p.suffix == ".out" for p in written)
    for p in written:
        data = p.read_bytes()
        assert s3_server.secret_key.encode() not in data and s3_server.access_key.encode() not in data, p
    assert s3_server.secret_key not in done.stdout + done.stderr
