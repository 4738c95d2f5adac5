"""What each step has already made, and whether a rerun must make it again.

A step's fingerprint is a hash of its job, the options its result depends on (the job's own
`fingerprint=True` options, resolved as the job will resolve them) and the fingerprints of the
steps it reads from, so changing an option reruns that step and every step after it. The runner
keeps a record per step under `<workdir>/.distil-pipeline/<file>/<step>.json`, written when the
step starts and when it ends; a step is skipped only when its output's manifest exists and is
the very one its record vouches for, made with today's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distil_jobs.artifacts.location import Location, open_location
from distil_jobs.artifacts.manifest import MANIFEST
from distil_jobs.artifacts.run import CLAIM
from distil_jobs.errors import DistilError
from distil_jobs.pipeline.plan import Plan
from distil_jobs.pipeline.spec import Step, under

STATE = ".distil-pipeline"


@dataclass(frozen=True, slots=True)
class Decision:
    step: str
    run: bool
    reason: str
    clear: bool = False  # the output holds another fingerprint's work: remove it first


def fingerprints(plan: Plan) -> dict[str, str]:
    """Each step's fingerprint, upstream first (the plan is in run order)."""
    found: dict[str, str] = {}
    for step in plan.steps:
        body = {"job": step.job, "settings": plan.settings[step.name],
                "after": {n: found[n] for n in plan.needs(step.name)}}
        found[step.name] = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return found


def state_location(plan: Plan) -> Location:
    return open_location(under(plan.pipeline.workdir or ".", f"{STATE}/{Path(plan.pipeline.path).stem}"))


def read_record(state: Location, name: str) -> dict[str, Any]:
    try:
        return dict(state.read_json(f"{name}.json")) if state.exists(f"{name}.json") else {}
    except (OSError, ValueError):
        return {}  # a torn record vouches for nothing: the step reruns


def write_record(state: Location, name: str, record: dict[str, Any]) -> None:
    state.put_bytes(f"{name}.json", json.dumps(record | {"updated": time.time()}, indent=2, sort_keys=True).encode())


def manifest_digest(out: Location) -> str | None:
    if not out.exists(MANIFEST):
        return None
    return hashlib.sha256(out.read_bytes(MANIFEST)).hexdigest()


def _changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in keys[:3]) + (" ..." if len(keys) > 3 else "")


def vouches(record: dict[str, Any], fingerprint: str, digest: str) -> bool:
    """The step's record says its output's manifest (sha256 `digest`) was made with `fingerprint`:
    recorded when the step ended, or a Slurm submission whose job wrote the manifest later."""
    if record.get("fingerprint") != fingerprint or record.get("status") not in ("done", "submitted"):
        return False
    return record.get("manifest") == digest or (record.get("status") == "submitted" and not record.get("manifest"))


def decide(step: Step, plan: Plan, fps: dict[str, str], state: Location, rerun: set[str],
           active: Callable[[list[str]], str] | None = None) -> Decision:
    """Skip or run `step`, and why. `rerun`: the steps before it that run in this invocation;
    `active`: the cluster's state of a submitted step's jobs ('' when they are gone)."""
    out = open_location(step.output)
    record = read_record(state, step.name)
    digest = manifest_digest(out)
    same = record.get("fingerprint") == fps[step.name]
    upstream = [n for n in plan.needs(step.name) if n in rerun]
    if digest and vouches(record, fps[step.name], digest) and not upstream:
        return Decision(step.name, False, f"done with the same settings (fingerprint {fps[step.name]})")
    if record.get("status") == "submitted" and active is not None:
        live = active(record.get("job_ids", []))
        if live and any(s in live for s in ("PENDING", "RUNNING", "CONFIGURING", "REQUEUED", "SUSPENDED")):
            ids = ", ".join(record["job_ids"])
            if not same or upstream:  # a second writer on the same output would mix two runs
                raise DistilError(f"step {step.name} must rerun, but its job {ids} is still {live}: scancel {ids}, "
                                  "then rerun the same command")
            return Decision(step.name, False, f"already submitted: job {ids} is {live}")
    ours = bool(record) and (digest is None or record.get("manifest") in (None, digest))
    if not digest and not out.exists(CLAIM):
        return Decision(step.name, True, "not made yet")
    if upstream and ours:
        return Decision(step.name, True, f"its input step {upstream[0]} reruns", clear=True)
    if record and not same and ours:
        what = _changed(record.get("settings", {}), plan.settings[step.name]) or "an input step's settings"
        return Decision(step.name, True, f"settings changed ({what})", clear=True)
    if not digest:
        return Decision(step.name, True, "partial: resuming")
    if not record:
        return Decision(step.name, True, "made outside this pipeline: the job checks its settings")
    return Decision(step.name, True, "its manifest is not the one this pipeline recorded")


def clear_output(step: Step) -> None:
    """Remove a step's earlier output, manifest first, so no reader ever sees a half-removed artifact."""
    out = open_location(step.output)
    if out.exists(MANIFEST):
        out.delete(MANIFEST)
    if out.exists():
        out.delete("")


def progress(out: Location) -> str:
    """A partial output's progress: shards done, or the newest checkpoint."""
    done = [n for n in out.listdir("_shards") if n.endswith(".done")]
    steps = [n for n in out.listdir("checkpoints") if n.startswith("step-")]
    parts = [f"{len(done)} shard(s) done"] if done else []
    if steps:
        parts.append("checkpoint " + max(steps, key=lambda n: int(n.split("-")[1]) if n[5:].isdigit() else -1))
    return ", ".join(parts) or "started"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else str(value)


def headline(manifest: dict[str, Any]) -> str:
    """One line of what the artifact is worth: a student's watched metric before and after, a
    report's mean score per model, else its rows."""
    extra = manifest.get("extra") or {}
    head = extra.get("headline")
    if isinstance(head, dict) and "metric" in head:
        return f"{head['metric']} {_num(head.get('untrained'))} untrained → {_num(head.get('final'))}"
    if isinstance(extra.get("mean"), dict):
        return "mean " + ", ".join(f"{label} {_num(score)}" for label, score in extra["mean"].items())
    return f"{manifest.get('rows')} rows" if manifest.get("rows") is not None else ""


def status_rows(plan: Plan, active: Callable[[list[str]], str]) -> list[tuple[str, str, str, str]]:
    """(step, state, output URI, headline or progress) for `pipeline status`; `active` gives the
    cluster's state of a submitted step's jobs."""
    state = state_location(plan)
    fps = fingerprints(plan)
    rows = []
    for step in plan.steps:
        out = open_location(step.output)
        record = read_record(state, step.name)
        digest = manifest_digest(out)
        live = active(record.get("job_ids", [])) if record.get("status") == "submitted" else ""
        if live and not digest:
            note = progress(out) if out.exists(CLAIM) else ""
            rows.append((step.name, f"submitted (Slurm: {live})", step.output,
                         f"job {', '.join(record['job_ids'])}" + (f", {note}" if note else "")))
        elif digest:
            stale = record and not vouches(record, fps[step.name], digest)
            rows.append((step.name, "stale" if stale else "done", step.output,
                         headline(json.loads(out.read_bytes(MANIFEST)))))
        elif record.get("status") == "failed":
            rows.append((step.name, f"failed (exit {record.get('exit_code')})", step.output, progress(out)
                         if out.exists(CLAIM) else ""))
        elif out.exists(CLAIM):
            rows.append((step.name, "partial", step.output, progress(out)))
        else:
            rows.append((step.name, "missing", step.output, ""))
    return rows
