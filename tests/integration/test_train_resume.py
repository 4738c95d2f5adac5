"""Preemption and resume: SIGTERM → checkpoint → exit 75 → the same command finishes the run with
weights identical to an uninterrupted run (dropout stays on: the RNG state is restored)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import STUDENT, losses, make_targets, metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def targets(tmp_path_factory, data_path) -> Path:
    from tests.conftest import run_cli

    return make_targets(run_cli, data_path, tmp_path_factory.mktemp("targets"), rows=120)


def train_args(targets: Path, out: Path, *extra: str) -> list[str]:
    return ["train-student", "--targets", str(targets), *STUDENT, "--batch-size", "8", "--epochs", "2", "--lr",
            "3e-4", "--dev-fraction", "0.1", "--eval-steps", "5", "--save-steps", "4", "--keep-checkpoints", "2",
            "--output", str(out), *extra]


def kill_at_step(args: list[str], out: Path, step: int, sig: int = signal.SIGTERM) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "distil_jobs.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists() and any(r.get("step", 0) >= step and "loss" in r for r in metrics(out)):
            proc.send_signal(sig)
            break
        time.sleep(0.1)
    stdout, stderr = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_sigterm_saves_exits_75_and_the_rerun_ends_with_identical_weights(cli, targets, tmp_path):
    whole = tmp_path / "whole"
    cli(*train_args(targets, whole), check=True)
    steps = sorted(p.name for p in (whole / "checkpoints").iterdir())
    # 108 training rows / 8 = 13 steps per epoch, 26 in all; saved every 4, the newest 2 kept.
    assert steps == ["step-20", "step-24"]

    cut = tmp_path / "cut"
    killed = kill_at_step(train_args(targets, cut), cut, step=6)
    assert killed.returncode == 75, killed.stderr[-3000:]
    assert "preempted" in killed.stderr
    assert not (cut / "manifest.json").exists()
    saved = [p.name for p in (cut / "checkpoints").iterdir()]
    assert all(not n.startswith(".tmp") for n in saved) and saved

    resumed = cli(*train_args(targets, cut), check=True)
    assert "resumed from" in resumed.stderr
    assert (whole / "final" / "model.safetensors").read_bytes() == (cut / "final" / "model.safetensors").read_bytes()
    assert losses(whole) == losses(cut)


def test_sigusr1_is_a_preemption_signal_too(cli, targets, tmp_path):
    out = tmp_path / "usr1"
    killed = kill_at_step(train_args(targets, out, "--max-steps", "30"), out, step=2, sig=signal.SIGUSR1)
    assert killed.returncode == 75, killed.stderr[-3000:]
    assert "SIGUSR1" in killed.stderr
