"""Submitting `distil-jobs <job> ...` through submitit: to Slurm, or as local processes.

A launch is a `LaunchSpec` (which job, its flags, the resources). `render_sbatch` shows the exact
script submitit hands to sbatch; `submit` submits it. An array of N makes N shards, each told its
shard with `--num-shards N --shard-index i`, so the same launch works on Slurm and locally.
The job itself is started as a child process, so its exit code and signals behave exactly as
when it is run by hand.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distil_jobs.errors import DistilError, PreemptedError, first_line
from distil_jobs.jobs import sharded_jobs

PREEMPTED = PreemptedError.exit_code  # the job saved its state and wants to be resumed
BACKENDS = ("slurm", "local")


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    job: str
    args: tuple[str, ...] = ()
    array: int | None = None  # number of shards (one array task each)
    array_parallelism: int | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 4
    gpus_per_node: int = 0
    mem_gb: float | None = None
    timeout_min: int = 240
    partition: str | None = None
    account: str | None = None
    signal_delay_s: int = 120
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load, source venv, ...)
    extra: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {"qos": "high"}

    @property
    def name(self) -> str:
        return f"distil-{self.job}"

    def calls(self) -> list[JobCall]:
        """One call per array task (or a single one)."""
        if not self.array:
            return [JobCall(self.job, self.args)]
        if self.job not in sharded_jobs():
            raise DistilError(f"--array applies to sharded jobs ({', '.join(sharded_jobs())}), not {self.job}: "
                              "use --nodes for train-student")
        if any(a.startswith(("--num-shards", "--shard-index")) for a in self.args):
            raise DistilError("--array sets --num-shards/--shard-index for each task: remove them from the job flags")
        return [JobCall(self.job, (*self.args, "--num-shards", str(self.array), "--shard-index", str(i)))
                for i in range(self.array)]

    def slurm_parameters(self) -> dict[str, Any]:
        """sbatch options, named as submitit's SlurmExecutor names them."""
        params: dict[str, Any] = {
            "job_name": self.name,
            "nodes": self.nodes,
            "ntasks_per_node": self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
            "time": self.timeout_min,
            "signal_delay_s": self.signal_delay_s,
            "stderr_to_stdout": True,
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb * 1024)}MB"
        if self.partition:
            params["partition"] = self.partition
        if self.account:
            params["account"] = self.account
        if self.array_parallelism:
            params["array_parallelism"] = self.array_parallelism
        if self.setup:
            params["setup"] = list(self.setup)
        # train-student exits 75 after a checkpoint on preemption; the job may then be requeued.
        params["additional_parameters"] = {"requeue": True, **self.extra}
        return params


try:  # submitit is an extra; without it the module still imports (for --help and rendering errors)
    from submitit.helpers import Checkpointable as _Base
except ImportError:  # pragma: no cover - exercised only without the slurm extra
    _Base = object  # type: ignore[assignment,misc]


class JobCall(_Base):  # type: ignore[misc,valid-type]
    """`distil-jobs <job> <args>` as a picklable callable: what submitit runs on the node.

    Checkpointable: when submitit's own time-limit signal arrives, it requeues this same call,
    and the job resumes from its --output (chunks, checkpoints) by itself.
    """

    def __init__(self, job: str, args: tuple[str, ...]) -> None:
        self.job = job
        self.args = tuple(args)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "distil_jobs.cli", self.job, *self.args]

    def __call__(self) -> str:
        done = subprocess.run(self.command(), check=False)
        if done.returncode == PREEMPTED:
            return f"{self.job}: preempted after saving its state (exit {PREEMPTED}); rerun to resume"
        if done.returncode != 0:
            raise RuntimeError(f"{self.job} exited with code {done.returncode}; see this task's log")
        return f"{self.job}: done"

    def __repr__(self) -> str:
        return f"JobCall({self.job!r}, {self.args!r})"


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise DistilError("the slurm/local launchers need submitit: pip install 'distil-jobs[slurm]'") from None
    return submitit


def render_sbatch(spec: LaunchSpec, folder: str | os.PathLike[str], python: str | None = None) -> str:
    """The sbatch script submitit submits for `spec` (no Slurm needed to render it)."""
    _submitit()
    from submitit.slurm.slurm import _make_sbatch_string

    python = python or sys.executable
    command = f"{shlex.quote(python)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    params = spec.slurm_parameters()
    if spec.array:
        params["map_count"] = spec.array
    return str(_make_sbatch_string(command=command, folder=str(folder), **params))


def executor(spec: LaunchSpec, backend: str, folder: str | os.PathLike[str]) -> Any:
    if backend not in BACKENDS:
        raise DistilError(f"--backend {backend}: must be one of {', '.join(BACKENDS)}")
    submitit = _submitit()
    _quiet_sacct_warnings()
    # submitit fills in %j per job; create only the fixed part of the folder.
    Path(str(folder).split("%j")[0]).mkdir(parents=True, exist_ok=True)
    if backend == "slurm":
        try:
            ex = submitit.SlurmExecutor(folder=str(folder))
        except RuntimeError:
            raise DistilError("no Slurm here ('srun' not found): use --backend local, or submit from a login "
                              "node (scripts/slurm-up.sh starts a private cluster for trials)") from None
        ex.update_parameters(**spec.slurm_parameters())
        return ex
    ex = submitit.LocalExecutor(folder=str(folder))
    ex.update_parameters(timeout_min=spec.timeout_min, cpus_per_task=spec.cpus_per_task,
                         tasks_per_node=spec.tasks_per_node, nodes=1)
    return ex


def submit(spec: LaunchSpec, backend: str, folder: str | os.PathLike[str]) -> list[Any]:
    """Submit the launch; returns submitit jobs (one per array task)."""
    ex = executor(spec, backend, folder)
    calls = spec.calls()
    try:
        if len(calls) == 1:
            return [ex.submit(calls[0])]
        # A batch of submits is one array job whose tasks are the (Checkpointable) calls themselves.
        with ex.batch():
            jobs = [ex.submit(call) for call in calls]
        return jobs
    except Exception as e:
        if type(e).__name__ == "FailedJobError" or isinstance(e, subprocess.CalledProcessError):
            first = first_line(e, last=True)
            raise DistilError(f"sbatch refused the job ({first}): check partition, account and resources") from None
        raise


class _DropSacctNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Clusters without slurmdbd have no sacct; submitit then reads states from its own files.
        return "Bypassing sacct error" not in record.getMessage()


def _quiet_sacct_warnings() -> None:
    log = logging.getLogger("submitit")
    if not any(isinstance(f, _DropSacctNoise) for f in log.filters):
        log.addFilter(_DropSacctNoise())
