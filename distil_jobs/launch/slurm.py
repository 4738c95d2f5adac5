"""Submitting `distil-jobs <job> ...` through submitit: to Slurm, or as local processes.

A launch is a `LaunchSpec` (which job, its flags, the resources). `render_sbatch` shows the exact
script submitit hands to sbatch; `submit` submits it. An array of N makes N shards, each told its
shard with `--num-shards N --shard-index i`, so the same launch works on Slurm and locally.
The job itself is started as a child process (`jobcall.JobCall`), so its exit code and signals
behave exactly as when it is run by hand.
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

from distil_jobs.errors import DistilError, first_line
from distil_jobs.jobs import sharded_jobs
from distil_jobs.launch.container import Container
from distil_jobs.launch.jobcall import PREEMPTED, JobCall

__all__ = ["BACKENDS", "PREEMPTED", "JobCall", "LaunchSpec", "absolute_folder", "executor", "render_sbatch", "submit"]
BACKENDS = ("slurm", "local")
GRACE_MARGIN_S = 15  # of submitit's pre-timeout signal, kept for requeueing after the job saved


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
    qos: str | None = None
    dependency: str | None = None  # e.g. "afterok:1234": start after that job succeeded
    container: Container | None = None
    env_file: str | None = None  # absolute path, read on the node (secrets never enter the script)
    extra: dict[str, Any] = field(default_factory=dict)  # any other sbatch option, e.g. {"constraint": "a100"}

    @property
    def name(self) -> str:
        return f"distil-{self.job}"

    @property
    def grace_s(self) -> float:
        """How long a preempted job may take to save, of submitit's signal_delay_s."""
        return float(max(self.signal_delay_s - GRACE_MARGIN_S, self.signal_delay_s / 2))

    def call(self, args: tuple[str, ...]) -> JobCall:
        launcher = self.container.launcher(self.gpus_per_node > 0) if self.container else ()
        return JobCall(self.job, args, launcher, self.env_file, self.grace_s)

    def calls(self) -> list[JobCall]:
        """One call per array task (or a single one)."""
        if not self.array:
            return [self.call(self.args)]
        if self.job not in sharded_jobs():
            raise DistilError(f"--array applies to sharded jobs ({', '.join(sharded_jobs())}), not {self.job}: "
                              "use --nodes for train-student")
        if any(a.startswith(("--num-shards", "--shard-index")) for a in self.args):
            raise DistilError("--array sets --num-shards/--shard-index for each task: remove them from the job flags")
        return [self.call((*self.args, "--num-shards", str(self.array), "--shard-index", str(i)))
                for i in range(self.array)]

    @property
    def python(self) -> str | None:
        """The Python that runs submitit on the node: the image's under pyxis, else this one."""
        return self.container.python if self.container and self.container.pyxis else None

    def slurm_parameters(self, folder: str | os.PathLike[str] | None = None) -> dict[str, Any]:
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
        if self.qos:
            params["qos"] = self.qos
        if self.dependency:
            params["dependency"] = self.dependency
        if self.container and self.container.pyxis and folder is not None:
            params["srun_args"] = self.container.srun_args(absolute_folder(folder), self.env_file)
        if self.array_parallelism:
            params["array_parallelism"] = self.array_parallelism
        if self.setup:
            params["setup"] = list(self.setup)
        # train-student exits 75 after a checkpoint on preemption; the job may then be requeued.
        params["additional_parameters"] = {"requeue": True, **self.extra}
        return params


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise DistilError("the slurm/local launchers need submitit: pip install 'distil-jobs[slurm]'") from None
    return submitit


def absolute_folder(folder: str | os.PathLike[str]) -> str:
    """The folder as submitit uses it: absolute, from the current directory (%j kept)."""
    return str(Path(folder).expanduser().absolute())


def render_sbatch(spec: LaunchSpec, folder: str | os.PathLike[str], python: str | None = None) -> str:
    """The sbatch script submitit submits for `spec` (no Slurm needed to render it)."""
    _submitit()
    from submitit.slurm.slurm import _make_sbatch_string

    folder = absolute_folder(folder)
    python = python or spec.python or shlex.quote(sys.executable)
    command = f"{python} -u -m submitit.core._submit {shlex.quote(folder)}"
    params = spec.slurm_parameters(folder)
    if spec.array:
        params["map_count"] = spec.array
    return str(_make_sbatch_string(command=command, folder=folder, **params))


def executor(spec: LaunchSpec, backend: str, folder: str | os.PathLike[str]) -> Any:
    if backend not in BACKENDS:
        raise DistilError(f"--backend {backend}: must be one of {', '.join(BACKENDS)}")
    submitit = _submitit()
    _quiet_sacct_warnings()
    # submitit fills in %j per job; create only the fixed part of the folder.
    Path(str(folder).split("%j")[0]).mkdir(parents=True, exist_ok=True)
    if backend == "slurm":
        try:
            ex = submitit.SlurmExecutor(folder=absolute_folder(folder), python=spec.python)
        except RuntimeError:
            raise DistilError("no Slurm here ('srun' not found): use --backend local, or submit from a login "
                              "node (scripts/slurm-up.sh starts a private cluster for trials)") from None
        ex.update_parameters(**spec.slurm_parameters(folder))
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
