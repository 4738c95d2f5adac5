"""The Kubernetes launcher: every step rendered by `distil-jobs k8s render`'s code (the same
templates and checks), in one stream for `kubectl apply -f -`. All Jobs start at once; a step
that reads another step's output waits for its manifest (DISTIL_WAIT_FOR_INPUTS), so the order
holds without a workflow engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distil_jobs.errors import DistilError
from distil_jobs.launch.k8s import apply_manifests
from distil_jobs.launch.k8s_render import RenderSpec, render, to_yaml
from distil_jobs.pipeline.spec import Step


class K8sLauncher:
    """Collects every step's manifests for one `kubectl apply`."""

    name = "k8s"
    queued = True

    def __init__(self, image: str | None, namespace: str | None, queue: str | None) -> None:
        self.image, self.namespace, self.queue = image, namespace, queue
        self.objects: list[dict[str, Any]] = []

    def render_step(self, step: Step, config: Path, after: list[str]) -> list[dict[str, Any]]:
        r = step.resources
        image = r.image or self.image
        if not image:
            raise DistilError(f"step {step.name} has no image: pass --image, or set resources.image in the step")
        spec = RenderSpec(job=step.job, image=image, namespace=self.namespace, nnodes=r.nodes,
                          num_shards=r.shards, gpus_per_node=r.gpus, queue=self.queue, config=str(config),
                          cpus=str(r.cpus) if r.cpus else None, memory=r.memory, waits=bool(after),
                          run_id=None)
        return render(spec)

    def start(self, step: Step, config: Path, after: list[str]) -> list[str]:
        """The step's Job names (its manifests join the stream)."""
        objects = self.render_step(step, config, after)
        self.objects += objects
        return [o["metadata"]["name"] for o in objects if o["kind"] == "Job"]

    def preview(self, step: Step, config: Path, after: list[str]) -> list[str]:
        return [f"Job {name}" + (" (waits for its inputs)" if after else "") for name in self.start(step, config, after)]

    def text(self) -> str:
        return to_yaml(self.objects)

    def apply(self) -> None:
        apply_manifests(self.text())
