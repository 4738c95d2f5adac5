"""Run a job on Slurm (sbatch through submitit) or as local processes: `distil-jobs submit`.

\b
  distil-jobs submit --job precompute-embeddings --array 8 --cpus-per-task 8 --mem-gb 32 -- \\
      --config jobs/yoruba.yaml --output s3://emb/menyo
  distil-jobs submit --job train-student --nodes 4 --gpus-per-node 8 -- --config jobs/yoruba.yaml
  distil-jobs submit --backend local --job precompute-embeddings --array 2 --wait -- --input ... --output ...
  distil-jobs submit --render --job precompute-embeddings --array 8 -- ...   # print the sbatch script only
  jid=$(distil-jobs submit --parsable --job precompute-embeddings --array 8 -- --config jobs/yoruba.yaml)
  distil-jobs submit --job train-student --dependency afterok:$jid --apptainer distil.sif --env-file ~/.distil.env \\
      -- --config jobs/yoruba.yaml
"""

from __future__ import annotations

import click

from distil_jobs.errors import DistilError, first_line
from distil_jobs.launch.checks import check_job_flags, check_partition, check_pyxis, check_resources
from distil_jobs.launch.container import Container
from distil_jobs.launch.envfile import check_env_file
from distil_jobs.launch.jobcall import exit_status, overall_status
from distil_jobs.launch.slurm import BACKENDS, LaunchSpec, absolute_folder, render_sbatch, submit

__all__ = ["check_job_flags", "submit_cmd"]


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
@click.option("--signal-delay-s", type=int, default=120, show_default=True,
              help="Preemption signal (USR2) this long before the time limit; the job saves within it.")
@click.option("--partition", default=None, help="Checked with sinfo before submitting.")
@click.option("--account", default=None)
@click.option("--qos", default=None, help="Slurm quality of service.")
@click.option("--dependency", default=None, help="Start after other jobs, e.g. afterok:1234 (sbatch --dependency).")
@click.option("--setup", multiple=True, help="Shell line run before the job, e.g. 'module load cuda' (repeatable).")
@click.option("--container-image", default=None, help="Run in this image with pyxis (srun --container-image).")
@click.option("--apptainer", "apptainer_sif", default=None, help="Run as `apptainer exec [--nv] SIF distil-jobs ...`.")
@click.option("--container-mounts", multiple=True, help="SRC[:DST[:ro]] to mount in the container (repeatable).")
@click.option("--container-python", default="python3", show_default=True,
              help="The Python in the pyxis image that runs submitit.")
@click.option("--env-file", default=None, help="KEY=VALUE secrets (mode 600), read on the node: never in the "
              "script, the pickles or the logs.")
@click.option("--folder", default="distil-logs/%j", show_default=True,
              help="Where submitit keeps scripts, pickles and logs (%j = job id).")
@click.option("--wait/--no-wait", default=False, help="Wait for every task; exit with the job's own status.")
@click.option("--render", is_flag=True, help="Print the sbatch script and exit without submitting.")
@click.option("--parsable", is_flag=True, help="Print only the job id (for --dependency afterok:ID).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Resolve the job flags locally (--dry-run) before submitting.")
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED)
def submit_cmd(job: str, backend: str, array: int | None, array_parallelism: int | None, nodes: int,
               tasks_per_node: int, cpus_per_task: int, gpus_per_node: int, mem_gb: float | None, time_min: int,
               signal_delay_s: int, partition: str | None, account: str | None, qos: str | None,
               dependency: str | None, setup: tuple[str, ...], container_image: str | None,
               apptainer_sif: str | None, container_mounts: tuple[str, ...], container_python: str,
               env_file: str | None, folder: str, wait: bool, render: bool, parsable: bool, check: bool,
               job_args: tuple[str, ...]) -> None:
    from distil_jobs.jobs import job as job_spec

    job_spec(job)  # an unknown job is a one-line error naming the known ones
    container = None
    if container_image or apptainer_sif or container_mounts:
        container = Container(container_image, apptainer_sif, container_mounts, container_python)
    spec = LaunchSpec(job, tuple(job_args), array=array, array_parallelism=array_parallelism, nodes=nodes,
                      tasks_per_node=tasks_per_node, cpus_per_task=cpus_per_task, gpus_per_node=gpus_per_node,
                      mem_gb=mem_gb, timeout_min=time_min, partition=partition, account=account,
                      signal_delay_s=signal_delay_s, setup=setup, qos=qos, dependency=dependency,
                      container=container, env_file=str(check_env_file(env_file)) if env_file else None)
    check_resources(spec)
    calls = spec.calls()  # validates --array against the job
    if render:
        click.echo(render_sbatch(spec, folder))
        for call in calls:
            click.echo(f"# task: {' '.join(call.command()[1:])}")
        click.echo(f"# logs: {absolute_folder(folder)}")
        return
    if backend == "slurm":
        check_partition(partition)
        if container and container.pyxis:
            check_pyxis()
    if check:
        check_job_flags(job, calls[0].args)
    jobs = submit(spec, backend, folder)
    ids = [j.job_id for j in jobs]
    if parsable:
        click.echo(",".join(dict.fromkeys(i.split("_")[0] for i in ids)))
    else:
        click.echo(f"submitted {job} ({backend}): {len(jobs)} task(s), job id(s) {', '.join(ids)}; logs in "
                   f"{jobs[0].paths.folder}")
    if wait:
        wait_for(jobs)


def wait_for(jobs: list) -> None:
    """Wait for every task; raise with the job's own exit status (2 bad input, 75 preempted...)."""
    codes = []
    for j in jobs:
        try:
            click.echo(f"{j.job_id}: {j.result()}")
            codes.append(0)
        except Exception as e:  # submitit re-raises the task's failure with the job's traceback text
            codes.append(exit_status(e))
            click.echo(f"{j.job_id}: failed (exit {codes[-1]}): {first_line(e, last=True)}", err=True)
    code = overall_status(codes)
    if code:
        failed = [j.job_id for j, c in zip(jobs, codes, strict=True) if c]
        err = DistilError(f"{len(failed)} of {len(jobs)} task(s) failed ({', '.join(failed)}), exit {code}: see "
                          f"their logs in {jobs[0].paths.folder}")
        err.exit_code = code
        raise err
