"""`distil-jobs pipeline`: one file describes a whole distillation (spec), its steps are linked
and checked before anything runs (plan), what is already made is skipped by fingerprint (state),
and a launcher runs the rest: local processes, Slurm jobs, or Kubernetes Jobs (run)."""

from __future__ import annotations

import sys
from typing import Any

import click

LAUNCHERS = ("local", "slurm", "k8s")


@click.group("pipeline")
def pipeline_group() -> None:
    """Run a pipeline file's steps in order (skipping what is done), or show where it stands."""


def _plan(file: str, workdir: str | None) -> Any:
    from distil_jobs.pipeline.plan import plan_pipeline
    from distil_jobs.pipeline.spec import load_pipeline

    return plan_pipeline(load_pipeline(file, workdir))


@pipeline_group.command("run")
@click.argument("file")
@click.option("--launcher", type=click.Choice(LAUNCHERS), default="local", show_default=True,
              help="local: processes here, in order; slurm: sbatch with afterok dependencies; k8s: Jobs for "
                   "kubectl apply, each waiting for its inputs.")
@click.option("--workdir", default=None, help="Folder or URI that relative outputs and inputs live under "
                                               "(default: the file's 'workdir:', else the current folder).")
@click.option("--from", "start", default=None, help="Run this step and the ones after it (earlier ones must be done).")
@click.option("--only", default=None, help="Run only this step (the steps it reads must be done).")
@click.option("--dry-run", is_flag=True, help="Print the steps, their links and what the launcher would submit; "
                                              "run nothing.")
@click.option("--wait/--no-wait", default=False, help="slurm: wait for every job; exit with the first failure's status.")
@click.option("--partition", default=None, help="slurm: the partition (checked with sinfo).")
@click.option("--account", default=None, help="slurm: the account to charge.")
@click.option("--qos", default=None, help="slurm: the quality of service.")
@click.option("--env-file", default=None, help="slurm: KEY=VALUE secrets (mode 600) exported to every step on its "
                                               "node; never copied into the submit folder.")
@click.option("--image", default=None, help="k8s: the image of steps without resources.image.")
@click.option("--namespace", default=None, help="k8s: namespace of every object.")
@click.option("--queue", default=None, help="k8s: Kueue LocalQueue.")
@click.option("--apply", "apply_", is_flag=True, help="k8s: pipe the manifests to kubectl apply -f -.")
def run_cmd(file: str, launcher: str, workdir: str | None, start: str | None, only: str | None, dry_run: bool,
            wait: bool, partition: str | None, account: str | None, qos: str | None, env_file: str | None,
            image: str | None, namespace: str | None, queue: str | None,
            apply_: bool) -> None:
    """Check every step and link of FILE, then run the steps that are not done with today's settings."""
    from distil_jobs.pipeline.run import Runner, select

    plan = _plan(file, workdir)
    chosen = select(plan, start, only)
    # With k8s, stdout is the manifests (for kubectl apply -f -): the progress lines go to stderr.
    echo = (lambda line: click.echo(line, err=True)) if launcher == "k8s" else click.echo
    if launcher == "slurm":
        from distil_jobs.pipeline.local import config_folder
        from distil_jobs.pipeline.slurm import SlurmLauncher
        from distil_jobs.pipeline.state import state_location

        handle: Any = SlurmLauncher(config_folder(state_location(plan).uri) / "slurm", partition, account, qos,
                                     env_file)
    elif launcher == "k8s":
        from distil_jobs.pipeline.k8s import K8sLauncher

        handle = K8sLauncher(image, namespace, queue)
    else:
        from distil_jobs.pipeline.local import LocalLauncher

        handle = LocalLauncher()
    if dry_run:
        for link in plan.links:
            echo(f"link: {link.producer} -> {link.step}.{link.option} ({link.uri})")
    runner = Runner(plan, handle, echo, dry_run or (launcher == "k8s" and not apply_))
    code = runner.run(chosen)
    if launcher == "k8s":
        click.echo(handle.text(), nl=False)
        if apply_ and not dry_run and handle.objects:
            handle.apply()
    elif launcher == "slurm" and wait and not dry_run and code == 0:
        code = runner.wait()
    sys.exit(code)


@pipeline_group.command("status")
@click.argument("file")
@click.option("--workdir", default=None, help="As given to `pipeline run`.")
def status_cmd(file: str, workdir: str | None) -> None:
    """Each step of FILE: done / stale / submitted / partial (progress) / failed / missing, its output
    and headline metric."""
    from distil_jobs.pipeline.slurm import job_states
    from distil_jobs.pipeline.state import status_rows

    rows = status_rows(_plan(file, workdir), job_states)
    width = max(len(r[0]) for r in rows)
    for name, state, uri, note in rows:
        click.echo(f"{name:<{width}}  {state:<16} {uri}" + (f"  {note}" if note else ""))
