"""Run a job on Slurm (sbatch through submitit) or as local processes: `distil-jobs submit`.

\b
  distil-jobs submit --job precompute-embeddings --array 8 --cpus-per-task 8 --mem-gb 32 -- \\
      --config jobs/yoruba.yaml --output s3://emb/menyo
  distil-jobs submit --job train-student --nodes 4 --gpus-per-node 8 -- --config jobs/yoruba.yaml
  distil-jobs submit --backend local --job precompute-embeddings --array 2 --wait -- --input ... --output ...
  distil-jobs submit --render --job precompute-embeddings --array 8 -- ...   # print the sbatch script only
"""

from __future__ import annotations

import subprocess
import sys

import click

from distil_jobs.errors import DistilError, first_line
from distil_jobs.launch.slurm import BACKENDS, LaunchSpec, render_sbatch, submit


def check_job_flags(job: str, args: tuple[str, ...]) -> None:
    """Resolve the job's config here (--dry-run) so a typo fails now, not after hours in the queue."""
    done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", job, *args, "--dry-run"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = first_line(done.stderr, last=True)
        raise DistilError(f"the {job} flags do not resolve: {last.removeprefix('error: ')}")


@click.command("submit", help=__doc__, context_settings={"ignore_unknown_options": False})
@click.option("--job", required=True, help="Job to run, e.g. precompute-embeddings, train-student, evaluate-mteb.")
@click.option("--backend", type=click.Choice(BACKENDS), default="slurm", show_default=True,
              help="slurm: sbatch via submitit; local: processes on this machine.")
@click.option("--array", type=int, default=None, help="Run N shards as an array job (sets --num-shards/--shard-index).")
@click.option("--array-parallelism", type=int, default=None, help="At most this many array tasks at once.")
@click.option("--nodes", type=int, default=1, show_default=True, help="Nodes (multi-node train-student).")
@click.option("--tasks-per-node", type=int, default=1, show_default=True, help="Tasks per node (one per node: "
              "train-student spawns one rank per GPU itself).")
@click.option("--cpus-per-task", type=int, default=4, show_default=True)
@click.option("--gpus-per-node", type=int, default=0, show_default=True)
@click.option("--mem-gb", type=float, default=None, help="Memory per node in GB (default: the cluster's).")
@click.option("--time-min", type=int, default=240, show_default=True, help="Time limit in minutes.")
@click.option("--partition", default=None)
@click.option("--account", default=None)
@click.option("--setup", multiple=True, help="Shell line run before the job, e.g. 'module load cuda' (repeatable).")
@click.option("--folder", default="distil-logs/%j", show_default=True,
              help="Where submitit keeps scripts, pickles and logs (%j = job id).")
@click.option("--wait/--no-wait", default=False, help="Wait for every task and fail if one fails.")
@click.option("--render", is_flag=True, help="Print the sbatch script and exit without submitting.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Resolve the job flags locally (--dry-run) before submitting.")
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED)
def submit_cmd(job: str, backend: str, array: int | None, array_parallelism: int | None, nodes: int,
               tasks_per_node: int, cpus_per_task: int, gpus_per_node: int, mem_gb: float | None, time_min: int,
               partition: str | None, account: str | None, setup: tuple[str, ...], folder: str, wait: bool,
               render: bool, check: bool, job_args: tuple[str, ...]) -> None:
    from distil_jobs.jobs import job as job_spec

    job_spec(job)  # an unknown job is a one-line error naming the known ones
    if array is not None and array < 1:
        raise DistilError(f"--array {array}: must be at least 1")
    spec = LaunchSpec(job, tuple(job_args), array=array, array_parallelism=array_parallelism, nodes=nodes,
                      tasks_per_node=tasks_per_node, cpus_per_task=cpus_per_task, gpus_per_node=gpus_per_node,
                      mem_gb=mem_gb, timeout_min=time_min, partition=partition, account=account, setup=setup)
    calls = spec.calls()  # validates --array against the job
    if render:
        click.echo(render_sbatch(spec, folder))
        for call in calls:
            click.echo(f"# task: {' '.join(call.command()[1:])}")
        return
    if check:
        check_job_flags(job, calls[0].args)
    jobs = submit(spec, backend, folder)
    ids = [j.job_id for j in jobs]
    click.echo(f"submitted {job} ({backend}): {len(jobs)} task(s), job id(s) {', '.join(ids)}; logs in "
               f"{jobs[0].paths.folder}")
    if not wait:
        return
    failed = []
    for j in jobs:
        try:
            click.echo(f"{j.job_id}: {j.result()}")
        except Exception as e:  # submitit re-raises the task's failure with its log tail
            failed.append(j.job_id)
            last = first_line(e, last=True)
            click.echo(f"{j.job_id}: failed: {last}", err=True)
    if failed:
        raise DistilError(f"{len(failed)} of {len(jobs)} task(s) failed ({', '.join(failed)}): see their logs in "
                          f"{jobs[0].paths.folder}")
