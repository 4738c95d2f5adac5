"""Preemption: a signal is remembered, acted on at the next step on every rank, and Slurm requeues the job.

SIGTERM (Kubernetes, Slurm at the time limit), SIGUSR1/SIGUSR2 (Slurm's --signal, submitit) all
mean "save and leave": the loop checkpoints, exits 75, and the same command resumes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from typing import Any

log = logging.getLogger("distil_jobs.train.preemption")
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class PreemptionFlag:
    """Remembers a preemption signal; the loop acts on it at the next step, on every rank at once."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous = {s: signal.signal(s, self._handle) for s in PREEMPT_SIGNALS}

    def _handle(self, signum: int, _frame: Any) -> None:
        if not self.signum:
            log.info("received %s: saving a checkpoint at the next step, then exiting 75",
                     signal.Signals(signum).name)
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


def requeue_under_slurm() -> None:
    """Put this Slurm job back in the queue when it may be requeued (rank 0 only)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return
    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, timeout=30)
        if "Requeue=1" not in shown.stdout:
            log.info("Slurm job %s does not allow requeue (sbatch --requeue): not requeued", job)
            return
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=30)
        log.info("scontrol requeue %s: %s", job, "ok" if done.returncode == 0 else done.stderr.strip())
    except (OSError, subprocess.SubprocessError) as e:
        log.info("could not requeue Slurm job %s (%s)", job, e)
