"""Links between steps, checked before anything runs.

An input option (the registry's `JobSpec.inputs`) whose URI is a step's output, or a path inside
it (`student/final`), links the two steps; the producer's artifact kind must be one the option
accepts. An input that no step produces must exist already (a dataset, a model folder) or, for
options that take models, be an alias or hub id. Steps then run in link order (file order among
independent ones); a cycle is an error naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from distil_jobs.artifacts.wait import parse_wait
from distil_jobs.config.command import WAIT_KEY
from distil_jobs.config.fields import fingerprint_of, redact, resolve
from distil_jobs.errors import DistilError
from distil_jobs.jobs import JOBS, MODEL
from distil_jobs.pipeline.spec import Pipeline, Step, is_absolute, producer_of, under


@dataclass(frozen=True, slots=True)
class Link:
    step: str  # the consumer
    option: str
    uri: str
    producer: str


@dataclass(frozen=True, slots=True)
class Plan:
    pipeline: Pipeline
    steps: list[Step]  # in run order
    links: list[Link]
    settings: dict[str, dict[str, Any]]  # per step: the options its result depends on, credentials masked

    def needs(self, name: str) -> list[str]:
        """The steps whose outputs `name` reads, in run order."""
        producers = {link.producer for link in self.links if link.step == name}
        return [s.name for s in self.steps if s.name in producers]

    def after(self, name: str) -> list[str]:
        """`name` and every step that reads, directly or not, what it makes."""
        found = [name]
        for s in self.steps:
            if s.name not in found and any(p in found for p in self.needs(s.name)):
                found.append(s.name)
        return found


def _exists(uri: str) -> bool | None:
    """Whether `uri` exists; None when it cannot be told without the network (hf://)."""
    if uri.startswith("hf://"):
        return None
    if "://" not in uri:
        return os.path.exists(uri)
    from distil_jobs.artifacts.location import open_location

    try:
        return open_location(uri).exists()
    except DistilError:
        return None


def _link_value(value: str, step: Step, option: str, pipeline: Pipeline, outputs: dict[str, str],
                links: list[Link]) -> str:
    accepts = JOBS[step.job].inputs[option]
    candidate = under(pipeline.workdir, value)
    producer = producer_of(candidate, outputs)
    where = f"{pipeline.path} [{step.name}] {option}: {value}"
    if producer is not None:
        kind = JOBS[pipeline.step(producer).job].output_kind
        if kind not in accepts:
            raise DistilError(f"{where} is made by step '{producer}' ({pipeline.step(producer).job}, a {kind}), but "
                              f"{option} takes {' or '.join(accepts)}: link it to a step that makes one")
        links.append(Link(step.name, option, candidate, producer))
        return candidate
    for path in dict.fromkeys((candidate, value)):
        if _exists(path) is not False:
            return path
    if MODEL in accepts and not is_absolute(value):
        return value  # a model alias or hub id: the job resolves it
    made = ", ".join(f"{n} → {o}" for n, o in outputs.items())
    raise DistilError(f"{where}: no step makes it and it does not exist: fix the path, or link it to a step's "
                      f"output ({made})")


def _order(steps: list[Step], needs: dict[str, set[str]], path: str) -> list[Step]:
    done: list[Step] = []
    left = list(steps)
    while left:
        ready = next((s for s in left if needs[s.name] <= {d.name for d in done}), None)
        if ready is None:
            raise DistilError(f"{path}: the steps form a cycle ({_cycle(left, needs)}): one of these inputs must "
                              "come from elsewhere")
        done.append(ready)
        left.remove(ready)
    return done


def _cycle(left: list[Step], needs: dict[str, set[str]]) -> str:
    names = {s.name for s in left}
    path = [left[0].name]
    while True:
        nxt = sorted(needs[path[-1]] & names)[0]
        if nxt in path:
            loop = [*path[path.index(nxt):], nxt]
            return " → ".join(reversed(loop))
        path.append(nxt)


def plan_pipeline(pipeline: Pipeline) -> Plan:
    """Resolve every link and check every step's options; raises DistilError (exit 2) on bad input."""
    outputs: dict[str, str] = {}
    for step in pipeline.steps:
        if not step.output:
            raise DistilError(f"{pipeline.path} [{step.name}] has no output: add 'output: <name>' (relative to "
                              "the workdir)")
        out = under(pipeline.workdir, step.output)
        other = producer_of(out, outputs) or next((n for n, o in outputs.items() if o.startswith(out.rstrip("/") + "/")),
                                                None)
        if other:
            raise DistilError(f"{pipeline.path} [{step.name}] output {out} overlaps step '{other}''s output "
                              f"{outputs[other]}: give each step its own output")
        outputs[step.name] = out
    links: list[Link] = []
    steps: list[Step] = []
    settings: dict[str, dict[str, Any]] = {}
    for step in pipeline.steps:
        options: dict[str, Any] = dict(step.options, output=outputs[step.name])
        for option in JOBS[step.job].inputs:
            value = options.get(option)
            if isinstance(value, str) and value:
                options[option] = _link_value(value, step, option, pipeline, outputs, links)
            elif isinstance(value, list):
                options[option] = [_link_value(v, step, option, pipeline, outputs, links) if isinstance(v, str) else v
                                   for v in value]
        resolved = replace(step, options=options)
        cfg = check_options(resolved, pipeline.path)
        settings[step.name] = redact({k: v for k, v in fingerprint_of(cfg).items() if k != "output"}, type(cfg))
        steps.append(resolved)
    needs = {s.name: {link.producer for link in links if link.step == s.name} for s in steps}
    return Plan(pipeline, _order(steps, needs, pipeline.path), links, settings)


def check_options(step: Step, path: str) -> Any:
    """The step's options as its job will resolve them (DISTIL_* env included): unknown keys, types,
    bounds and required options fail here, before any step runs. Returns the job's Config."""
    cls = JOBS[step.job].load().Config
    where = f"{path} [{step.name}]"
    options = dict(step.options)
    parse_wait(options.pop(WAIT_KEY, None), f"{WAIT_KEY} in {where}")  # every job's, outside its Config
    return cls(**resolve(cls, {}, options, where).values)
