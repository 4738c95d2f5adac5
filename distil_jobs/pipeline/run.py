"""`distil-jobs pipeline run`: check the whole file, then run what is not done, in link order.

local runs each step and waits for it; slurm submits each step after the ones it reads
(`afterok`) and, with --wait, waits for them all; k8s renders every step for one `kubectl apply`
(with --apply, applies it), each Job waiting for its inputs' manifests.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distil_jobs.artifacts.location import open_location
from distil_jobs.config.command import WAIT_KEY
from distil_jobs.errors import DistilError, PreemptedError
from distil_jobs.pipeline import local
from distil_jobs.pipeline.plan import Plan
from distil_jobs.pipeline.slurm import job_states
from distil_jobs.pipeline.spec import Step
from distil_jobs.pipeline.state import (
    clear_output,
    decide,
    fingerprints,
    manifest_digest,
    state_location,
    write_record,
)

Echo = Callable[[str], None]


def select(plan: Plan, start: str | None, only: str | None) -> list[str]:
    """The steps this invocation may run (--from, --only); the steps they read must be done."""
    names = [s.name for s in plan.steps]
    if start and only:
        raise DistilError("--from and --only together: pick one")
    for name in (start, only):
        if name:
            plan.pipeline.step(name)  # a one-line error for an unknown step
    chosen = [only] if only else names[names.index(start):] if start else names
    for name in chosen:
        if plan.pipeline.step(name).options.get(WAIT_KEY):
            continue  # it waits for its inputs itself (made elsewhere, e.g. by a queued job)
        for need in plan.needs(name):
            if need not in chosen and manifest_digest(open_location(plan.pipeline.step(need).output)) is None:
                raise DistilError(f"step {name} reads step {need}'s output, which is not made yet: run without "
                                  f"--from/--only, run --only {need} first, or give {name} '{WAIT_KEY}: SECONDS'")
    return chosen


class Runner:
    """One invocation: decisions, records and the launcher's handles of the steps it started."""

    def __init__(self, plan: Plan, launcher: Any, echo: Echo, dry_run: bool) -> None:
        self.plan, self.launcher, self.echo, self.dry_run = plan, launcher, echo, dry_run
        self.fps = fingerprints(plan)
        self.state = state_location(plan)
        self.configs = Path(tempfile.mkdtemp(prefix="distil-pipeline-")) if launcher.name == "k8s" \
            else local.config_folder(self.state.uri)
        self.started: dict[str, list[str]] = {}  # step -> its job ids (slurm, k8s) or [] (local)

    def record(self, step: Step, **status: Any) -> None:
        write_record(self.state, step.name, {
            "step": step.name, "job": step.job, "output": step.output, "fingerprint": self.fps[step.name],
            "settings": self.plan.settings[step.name], "launcher": self.launcher.name, **status})

    def run(self, chosen: list[str]) -> int:
        for step in self.plan.steps:
            if step.name not in chosen:
                continue
            decision = decide(step, self.plan, self.fps, self.state, set(self.started),
                              job_states if self.launcher.name == "slurm" else None)
            title = step.name if step.name == step.job else f"{step.name} ({step.job})"
            self.echo(f"pipeline: {title}: {'run' if decision.run else 'skip'}: {decision.reason}")
            if not decision.run:
                continue
            config = local.step_config(step, self.configs, write=not self.dry_run or self.launcher.name == "k8s")
            after = [i for need in self.plan.needs(step.name) for i in self.started.get(need, [])]
            if self.dry_run:
                self.started[step.name] = [f"<{step.name}>"]
                for line in self.launcher.preview(step, config, after):
                    self.echo("  " + line)
                continue
            if decision.clear:
                clear_output(step)
            code = self.start(step, config, after)
            if code:
                return code
        return 0

    def start(self, step: Step, config: Path, after: list[str]) -> int:
        if self.launcher.queued:
            ids = self.launcher.start(step, config, after)
            self.started[step.name] = ids
            self.record(step, status="submitted", job_ids=ids)
            self.echo(f"pipeline: {step.name} submitted: job {', '.join(ids)}"
                      + (f" (afterok:{':'.join(after)})" if after and self.launcher.name == "slurm" else ""))
            return 0
        self.record(step, status="running")
        t0 = time.time()
        code = self.launcher.run(step, config)
        self.started[step.name] = []
        return self.finished(step, code, round(time.time() - t0, 1))

    def finished(self, step: Step, code: int, seconds: float | None = None) -> int:
        """Record how a step ended; its exit code, or 1 when it exited 0 without a manifest."""
        digest = manifest_digest(open_location(step.output))
        if code == 0 and digest is None:
            code = 1
            self.echo(f"pipeline: {step.name} exited 0 but {step.output} has no manifest: not vouching for it")
        if code:
            self.record(step, status="failed", exit_code=code, seconds=seconds)
            why = (f"stopped by a signal after saving its state (exit {code}): rerun the same command to resume it"
                   if code == PreemptedError.exit_code else f"failed (exit {code}): fix it and rerun the same command")
            self.echo(f"pipeline: {step.name} {why}; finished steps are skipped")
            return code
        self.record(step, status="done", manifest=digest, seconds=seconds)
        self.echo(f"pipeline: {step.name} done" + (f" in {seconds} s" if seconds is not None else "")
                  + f" -> {step.output}")
        return 0

    def wait(self) -> int:
        """Slurm --wait: wait for every submitted step, in order; the first failure's exit code (the
        steps after it, which would wait forever on afterok, are cancelled)."""
        for i, step in enumerate(self.plan.steps):
            if step.name in self.started:
                code = self.finished(step, self.launcher.wait(step.name))
                if code:
                    later = [j for s in self.plan.steps[i + 1:] for j in self.started.get(s.name, [])]
                    self.launcher.cancel(later)
                    return code
        return 0
