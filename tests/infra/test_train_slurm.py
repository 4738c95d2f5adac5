"""train-student under a real Slurm (loopback cluster from scripts/slurm-up.sh): Slurm's pre-timeout
signal (SIGUSR1) makes it save a checkpoint and `scontrol requeue` its own job; the requeued job
resumes from that checkpoint and publishes the student."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import head_jsonl

pytestmark = [pytest.mark.server, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


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


def train_flags(rows, out, *extra: str) -> list[str]:
    return ["--input", str(rows), "--text-column", "en", "--pair-column", "yo", "--teacher", "minilm",
            "--teacher-max-length", "32", "--student", "minilm", "--student-layers", "0,1", "--max-length", "32",
            "--batch-size", "8", "--dev-fraction", "0.1", "--eval-steps", "0", "--save-steps", "0",
            "--output", str(out), *extra]


def trained_steps(out) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    return max((json.loads(line).get("step", 0) for line in path.read_text().splitlines()
                if '"loss"' in line), default=0)


def wait_until(what, condition, timeout: float = 600, context=lambda: "") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}\n{context()}"
        time.sleep(0.5)


def rank_pids(out) -> list[int]:
    """The train-student ranks writing to `out` (python processes, not the srun that started them):
    the loopback nodes run on this host, so the test can reach them as a busy machine would."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"distil_jobs.cli" in argv and str(out).encode() in argv and b"python" in Path(argv[0].decode()).name.encode():
            pids.append(int(cmdline.parent.name))
    return pids


def assert_same_weights(a, b) -> None:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert (wa[name] == wb[name]).all(), f"{name} differs from the uninterrupted run"


def test_submitit_usr2_saves_requeues_and_ends_with_the_weights_of_an_uninterrupted_run(slurm_cluster, cli,
                                                                                        data_path, tmp_path):
    """`submit --job train-student` on Slurm; USR2 (submitit's preemption signal) mid-run: the
    parent forwards it, the child saves and exits 75, submitit requeues, the job resumes and
    finishes, and `submit --wait` exits 0 with the same weights as an uninterrupted run."""
    rows = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "menyo20k" / "train.jsonl", 120)
    steps = ("--max-steps", "12")
    whole, cut, folder = tmp_path / "whole", tmp_path / "cut", tmp_path / "submitit"
    cli("train-student", *train_flags(rows, whole, *steps), check=True)

    submit = subprocess.Popen([sys.executable, "-m", "distil_jobs.cli", "submit", "--job", "train-student",
                               "--cpus-per-task", "1", "--mem-gb", "3", "--time-min", "30", "--folder",
                               f"{folder}/%j", "--wait", "--", *train_flags(rows, cut, *steps)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until("the first training steps", lambda: trained_steps(cut) >= 2 or submit.poll() is not None)
    job_id = next(p.name for p in folder.iterdir() if p.is_dir())
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)  # to the job step, as Slurm does
    stdout, stderr = submit.communicate(timeout=600)
    log = "\n".join(p.read_text() for p in folder.rglob("*.out"))
    assert submit.returncode == 0, stdout + stderr + log[-3000:]
    assert "train-student: done" in stdout, log[-3000:]
    assert "forwarding SIGUSR2 to train-student" in log and "saved its state and exited 75: requeueing" in log
    assert "Requeued job" in log and "resumed from" in log, log[-3000:]
    assert job_field(job_id, "Restarts") == "1"
    assert json.loads((cut / "manifest.json").read_text())["extra"]["steps"] == 12
    assert_same_weights(whole, cut)


def test_train_script_on_two_nodes_saves_before_a_real_time_limit_and_resumes(slurm_cluster, data_path, tmp_path):
    """slurm/train.sbatch --nodes=2: srun starts one rank per node (gloo, rendezvous from the Slurm
    env); the time limit really expires: Slurm's --signal=USR1@60 warning reaches both ranks, they
    save and exit 75, the script requeues, the job resumes and publishes the student.

    The machine's speed must not decide the outcome (a fast one once finished all 40 steps before
    the warning came). So once training has started, the ranks are frozen with SIGSTOP, as on an
    overloaded node, and the limit is cut to a minute or two; Slurm's warning wakes them. Slurm
    checks limits every 30 s, and the limit ends at least 65 s after the cut, so the warning leaves
    the ranks 30 s or more to save."""
    rows = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "menyo20k" / "train.jsonl", 200)
    out, log = tmp_path / "student", tmp_path / "train.out"
    submitted = subprocess.run(["sbatch", "--parsable", "--nodes=2", "--cpus-per-task=1", "--mem=3G",
                                "--gpus-per-node=0", "--time=10", "--signal=USR1@60", f"--output={log}",
                                str(REPO / "slurm" / "train.sbatch"), *train_flags(rows, out, "--max-steps", "40")],
                               env={**os.environ, "DISTIL_CMD": f"{sys.executable} -m distil_jobs.cli",
                                    "OMP_NUM_THREADS": "1"},
                               capture_output=True, text=True, timeout=60, check=True)
    job_id = submitted.stdout.strip()

    def context() -> str:
        return f"job {job_id}: {job_field(job_id, 'JobState')}, restarts {job_field(job_id, 'Restarts')}\n" + (
            log.read_text()[-3000:] if log.exists() else "(no log)")

    wait_until("the first training steps", lambda: trained_steps(out) >= 1 or job_field(job_id, "JobState") not in
               ("PENDING", "RUNNING", "CONFIGURING"), context=context)
    assert job_field(job_id, "JobState") == "RUNNING", context()
    ranks = rank_pids(out)
    assert len(ranks) == 2, f"expected one rank per node, found {ranks}\n{context()}"
    for pid in ranks:
        os.kill(pid, signal.SIGSTOP)
    try:
        run_s = int(time.time() - time.mktime(time.strptime(job_field(job_id, "StartTime"), "%Y-%m-%dT%H:%M:%S")))
        subprocess.run(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={-(-(run_s + 65) // 60)}"], check=True,
                       timeout=30)
        # slurmstepd follows the warning with SIGCONT, so the frozen ranks wake to it and save.
        wait_until("the requeue", lambda: job_field(job_id, "Restarts") == "1", timeout=300, context=context)
    finally:
        for pid in ranks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    # The requeued run gets its full time again, so it finishes undisturbed.
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=10"], check=True, timeout=30)
    wait_until("the end of the job", lambda: job_field(job_id, "JobState") in ("COMPLETED", "FAILED", "CANCELLED",
                                                                               "TIMEOUT"), context=context)
    text = log.read_text()
    assert job_field(job_id, "JobState") == "COMPLETED", context()
    assert "received SIGUSR1" in text and "checkpoint saved" in text
    assert "preempted after a checkpoint; requeueing job" in text and "(restart 1)" in text
    assert "resumed from" in text and "TIME LIMIT" not in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["steps"] == 40
    assert manifest["extra"]["world_size"] == 2
