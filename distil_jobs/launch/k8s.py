"""`distil-jobs k8s render`: one job's Kubernetes manifests (docs/kubernetes.md).

\b
  distil-jobs k8s render train-student --image ghcr.io/ORG/distil-jobs:0.1.0-gpu --namespace ml \\
      --nnodes 4 --gpus-per-node 8 --config jobs/yoruba.yaml --queue gpu-queue --apply
  distil-jobs k8s render precompute-embeddings --image ... --num-shards 8 --gpus-per-node 1 > pre.yaml
"""

from __future__ import annotations

import shutil
import subprocess

import click

from distil_jobs.errors import DistilError


@click.group("k8s")
def k8s_group() -> None:
    """Kubernetes manifests for one job, from the templates in k8s/."""


@k8s_group.command("render", help=__doc__, short_help="One job's manifests (ConfigMaps, Service, Job) for kubectl apply.")
@click.argument("job")
@click.option("--image", default=None, help="Fully qualified image: registry/repository:tag or @sha256:digest.")
@click.option("--namespace", default=None, help="Namespace of every object (default: kubectl's current one).")
@click.option("--nnodes", type=int, default=1, show_default=True,
              help="train-student: pods (nodes) of the Indexed Job; completions = parallelism = DISTIL_NNODES.")
@click.option("--num-shards", type=int, default=1, show_default=True,
              help="Sharded jobs: pods of the Indexed Job; completions = parallelism = DISTIL_NUM_SHARDS.")
@click.option("--gpus-per-node", type=int, default=0, show_default=True,
              help="nvidia.com/gpu per pod (train-student starts one rank per GPU).")
@click.option("--queue", default=None, help="Kueue LocalQueue: adds the kueue.x-k8s.io/queue-name label and "
              "suspend: true (Kueue starts the Job when its quota fits).")
@click.option("--config", "config", default=None, help="The job's YAML config (flat, or one section per job); "
              "it goes into an immutable ConfigMap named by its content hash.  [default: k8s/base/config.yaml]")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one config option (repeatable).")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE",
              help="Plain (non-secret) environment for the pod (repeatable).")
@click.option("--data-pvc", default=None, help="Mount this ReadOnlyMany claim at /data (DISTIL_DATA_DIR); "
              "without it, datasets come from s3:// (k8s/components/data-pvc).")
@click.option("--run-id", default=None, help="Suffix of the Job's name (default: config hash + UTC time), so a "
              "re-apply makes a new Job instead of hitting immutable fields.")
@click.option("--ttl", "ttl_seconds", type=click.IntRange(min=0), default=86400, show_default=True,
              help="ttlSecondsAfterFinished: delete the finished Job (not its artifacts) after this long.")
@click.option("--wait-for-inputs", type=click.IntRange(min=0), default=21600, show_default=True,
              help="Seconds a job that reads another job's artifact waits for its manifest (0: fail at once).")
@click.option("--cpus", default=None, help="CPU request per pod, e.g. 8 (default: the template's).")
@click.option("--memory", default=None, help="Memory request = limit per pod, e.g. 64Gi (default: the template's).")
@click.option("--apply", "apply_", is_flag=True, help="Pipe the manifests to `kubectl apply -f -`.")
def render_cmd(job: str, image: str | None, namespace: str | None, nnodes: int, num_shards: int, gpus_per_node: int,
               queue: str | None, config: str | None, sets: tuple[str, ...], env: tuple[str, ...],
               data_pvc: str | None, run_id: str | None, ttl_seconds: int, wait_for_inputs: int, cpus: str | None,
               memory: str | None, apply_: bool) -> None:
    from distil_jobs.launch.k8s_render import RenderSpec, render, to_yaml

    spec = RenderSpec(job=job, image=image or "", namespace=namespace, nnodes=nnodes, num_shards=num_shards,
                      gpus_per_node=gpus_per_node, queue=queue, config=config, sets=sets, env=env,
                      data_pvc=data_pvc, run_id=run_id, ttl_seconds=ttl_seconds, wait_for_inputs=wait_for_inputs,
                      cpus=cpus, memory=memory)
    text = to_yaml(render(spec))
    if apply_:
        apply_manifests(text)
    else:
        click.echo(text, nl=False)


def apply_manifests(text: str) -> None:
    """`kubectl apply -f -` of rendered manifests; a one-line error when it cannot."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise DistilError("--apply needs kubectl on PATH: install kubectl, or drop --apply and pipe the output "
                          "to kubectl apply -f - yourself")
    done = subprocess.run([kubectl, "apply", "-f", "-"], input=text, text=True, check=False)
    if done.returncode != 0:
        raise DistilError(f"kubectl apply failed (exit {done.returncode}, message above): fix the cause and rerun")
