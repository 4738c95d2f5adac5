"""The Slurm launcher: each step goes through `distil-jobs submit`'s path (submitit, the same
checks), sharded steps as arrays, each after the steps it reads (`afterok`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from distil_jobs.launch.checks import check_partition, check_resources
from distil_jobs.launch.container import Container
from distil_jobs.launch.envfile import check_env_file
from distil_jobs.launch.jobcall import exit_status, overall_status
from distil_jobs.launch.slurm import LaunchSpec, submit
from distil_jobs.pipeline.spec import Step

_UNITS = {"K": 1 / 1024 / 1024, "M": 1 / 1024, "G": 1.0, "T": 1024.0}


def memory_gb(memory: str | None) -> float | None:
    if not memory:
        return None
    text = memory.upper().rstrip("B").rstrip("I")
    unit = text[-1] if text[-1] in _UNITS else "M"  # Slurm's default unit is MB
    return float(text.rstrip("KMGT")) * _UNITS[unit]


def launch_spec(step: Step, config: Path, after: list[str], partition: str | None = None, account: str | None = None,
                qos: str | None = None, env_file: str | None = None) -> LaunchSpec:
    r = step.resources
    return LaunchSpec(
        step.job, ("--config", str(config)), array=r.shards if r.shards > 1 else None, nodes=r.nodes,
        cpus_per_task=r.cpus or 4, gpus_per_node=r.gpus, mem_gb=memory_gb(r.memory),
        timeout_min=r.time_minutes or 240, partition=partition, account=account, qos=qos, env_file=env_file,
        dependency="afterok:" + ":".join(after) if after else None,
        container=Container(r.image, None, (), "python3") if r.image else None)


class SlurmLauncher:
    """Submits each step after the steps it reads; `wait` follows them to the end."""

    name = "slurm"
    queued = True

    def __init__(self, folder: Path, partition: str | None = None, account: str | None = None, qos: str | None = None,
                 env_file: str | None = None) -> None:
        self.folder = folder
        check_partition(partition)
        # env_file: checked here (mode 600, well-formed) and read on the node, so secrets never enter a script
        self.cluster = {"partition": partition, "account": account, "qos": qos,
                        "env_file": str(check_env_file(env_file)) if env_file else None}
        self.jobs: dict[str, list[Any]] = {}  # step -> submitit jobs

    def preview(self, step: Step, config: Path, after: list[str]) -> list[str]:
        spec = launch_spec(step, config, [], **self.cluster)
        check_resources(spec)
        spec = launch_spec(step, config, after, **self.cluster)  # after: placeholders in a dry run
        parts = [f"--array {spec.array}" if spec.array else "", f"--nodes {spec.nodes}" if spec.nodes > 1 else "",
                 f"--cpus-per-task {spec.cpus_per_task}", f"--gpus-per-node {spec.gpus_per_node}"
                 if spec.gpus_per_node else "", f"--mem-gb {spec.mem_gb:g}" if spec.mem_gb else "",
                 f"--time-min {spec.timeout_min}", f"--dependency {spec.dependency}" if spec.dependency else "",
                 *(f"--{k.replace('_', '-')} {v}" for k, v in self.cluster.items() if v)]
        return ["distil-jobs submit --job " + " ".join([step.job, *[p for p in parts if p], "--", *spec.args])]

    def start(self, step: Step, config: Path, after: list[str]) -> list[str]:
        """Submit the step; its Slurm job id(s)."""
        spec = launch_spec(step, config, after, **self.cluster)
        check_resources(spec)
        jobs = submit(spec, "slurm", self.folder / "%j")
        self.jobs[step.name] = jobs
        return list(dict.fromkeys(str(j.job_id).split("_")[0] for j in jobs))

    def wait(self, step: str) -> int:
        """Wait for a submitted step; its exit status (the job's own: 2 bad input, 75 preempted)."""
        codes = []
        for job in self.jobs[step]:
            try:
                job.result()
                codes.append(0)
            except Exception as e:  # submitit re-raises the task's failure with its traceback text
                codes.append(exit_status(e))
        return overall_status(codes)

    def cancel(self, ids: list[str]) -> None:
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, timeout=60, check=False)


def job_states(ids: list[str]) -> str:
    """Slurm's view of the jobs: squeue for live ones, else sacct; '' when Slurm does not answer."""
    if not ids:
        return ""
    try:
        live = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T"], capture_output=True, text=True,
                              timeout=30, check=False)
        lines = live.stdout.split() if live.returncode == 0 else []
        if lines:
            return " ".join(lines[i + 1] for i in range(0, len(lines), 2))
        done = subprocess.run(["sacct", "-n", "-X", "-P", "-j", ",".join(ids), "-o", "State"], capture_output=True,
                              text=True, timeout=30, check=False)
        return " ".join(s.split()[0] for s in done.stdout.split("\n") if s.strip()) if done.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""
