"""The local launcher: each step is `distil-jobs <job> --config <its section>` in a child process,
a sharded step's shards as parallel processes. The child's exit code is the step's."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from distil_jobs.pipeline.spec import Step

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def step_config(step: Step, folder: Path, write: bool = True) -> Path:
    """The step's options as a one-section config file, the form every job reads."""
    path = folder / f"{step.name}.yaml"
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({step.job: step.options}, sort_keys=False))
    return path


def config_folder(state_uri: str) -> Path:
    """Where the step configs go: the pipeline's state folder when it is local, else a temp folder."""
    if "://" in state_uri and not state_uri.startswith("file://"):
        return Path(tempfile.mkdtemp(prefix="distil-pipeline-"))
    return Path(state_uri.removeprefix("file://"))


def commands(step: Step, config: Path) -> list[list[str]]:
    base = [sys.executable, "-m", "distil_jobs.cli", step.job, "--config", str(config)]
    shards = step.resources.shards
    if shards <= 1:
        return [base]
    return [[*base, "--num-shards", str(shards), "--shard-index", str(i)] for i in range(shards)]


class LocalLauncher:
    """Runs each step here and waits for it (the runner records how it ended)."""

    name = "local"
    queued = False

    def preview(self, step: Step, config: Path, after: list[str]) -> list[str]:
        return [shlex.join(["distil-jobs", *cmd[3:]]) for cmd in commands(step, config)]

    def run(self, step: Step, config: Path) -> int:
        """The step's processes side by side; the first failure's exit code, else 0."""
        env = dict(os.environ)
        if step.resources.shards > 1:
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // step.resources.shards)))
        procs = [subprocess.Popen(cmd, env=env) for cmd in commands(step, config)]

        def forward(signum: int, _frame: object) -> None:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signum)

        # A signal to the pipeline (scheduler preemption, `kill`) reaches the running step, which saves
        # and exits 75; the pipeline waits for it instead of dying and leaving a writer behind.
        previous = {s: signal.signal(s, forward) for s in FORWARDED}
        try:
            codes = [p.wait() for p in procs]
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        return next((c for c in codes if c != 0), 0)
