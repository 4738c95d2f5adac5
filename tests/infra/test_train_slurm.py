"""train-student under a real Slurm (loopback cluster from scripts/slurm-up.sh): Slurm's pre-timeout
signal (SIGUSR1) makes it save a checkpoint and `scontrol requeue` its own job; the requeued job
resumes from that checkpoint and publishes the student."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import head_jsonl

pytestmark = [pytest.mark.server, pytest.mark.slow]


def job_field(job_id: str, name: str) -> str:
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    return next((f.split("=", 1)[1] for f in shown.split() if f.startswith(f"{name}=")), "")


def test_sigusr1_checkpoints_requeues_and_the_requeued_job_finishes(slurm_cluster, data_path, tmp_path):
    rows = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "menyo20k" / "train.jsonl", 120)
    out, log = tmp_path / "student", tmp_path / "train.out"
    script = tmp_path / "train.sh"
    # exec: the batch step's process is train-student itself, so `scancel --batch --signal` reaches it.
    script.write_text("#!/bin/bash\n" + " ".join([
        "exec", sys.executable, "-m", "distil_jobs.cli", "train-student", "--input", str(rows), "--text-column", "en",
        "--pair-column", "yo", "--teacher", "minilm", "--teacher-max-length", "32", "--student", "minilm",
        "--student-layers", "0,1", "--max-length", "32", "--batch-size", "8", "--epochs", "2", "--dev-fraction", "0.1",
        "--eval-steps", "0", "--save-steps", "0", "--output", str(out)]) + "\n")
    submitted = subprocess.run(["sbatch", "--parsable", "--requeue", "--open-mode=append", "--cpus-per-task=1",
                                "--mem=2G", f"--output={log}", str(script)],
                               capture_output=True, text=True, timeout=60, check=True)
    job_id = submitted.stdout.strip()

    deadline = time.time() + 300
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and '"loss"' in
                                          (out / "metrics.jsonl").read_text()):
        assert job_field(job_id, "JobState") not in ("FAILED", "COMPLETED", "CANCELLED"), log.read_text()
        time.sleep(0.5)
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], check=True, timeout=30)

    state = ""
    while time.time() < deadline + 300 and state not in ("COMPLETED", "FAILED", "CANCELLED"):
        time.sleep(1)
        state = job_field(job_id, "JobState")
    text = log.read_text()
    assert state == "COMPLETED", text[-3000:]
    assert "received SIGUSR1" in text and "checkpoint saved" in text
    assert "scontrol requeue" in text and job_field(job_id, "Restarts") == "1"
    assert "resumed from" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "student-model" and manifest["extra"]["steps"] == 26
