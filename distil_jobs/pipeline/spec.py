"""A pipeline file: the steps of one distillation, each a job with its options and resources.

Two shapes, both plain YAML (`${VAR:-default}` expanded as in job configs):

    workdir: out/demo                # optional; --workdir wins; relative URIs live under it
    precompute-embeddings:           # one section per job, run in file order of their links
      output: embeddings
      resources: {shards: 2}
    train-student:
      targets: embeddings

    steps:                           # or a list, when one job appears twice (two students)
      - {name: small, job: train-student, targets: embeddings, output: small}
      - {name: large, job: train-student, targets: embeddings, output: large}

`resources` (cpus, memory, gpus, nodes, time, shards, image) go to the launcher; the job never sees
them. Everything else in a step is the job's options, checked against the job's Config up front.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distil_jobs.config.files import expand_env_refs
from distil_jobs.errors import DistilError, first_line
from distil_jobs.jobs import JOBS

TOP_KEYS = ("workdir", "steps")
STEP_KEYS = ("name", "job", "resources")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # a step name is a file name, a Slurm job name and a k8s label
_MEMORY = re.compile(r"^\d+(\.\d+)?[KMGT]i?B?$|^\d+$", re.I)
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")  # Slurm's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S


@dataclass(frozen=True, slots=True)
class Resources:
    """What a launcher asks the cluster for; local runs use `shards` only."""

    cpus: int | None = None
    memory: str | None = None  # e.g. 16G
    gpus: int = 0  # per node
    nodes: int = 1
    time: str | None = None  # Slurm forms: 90, 1:30:00, 1-00:00
    shards: int = 1  # sharded jobs: parallel processes, array tasks or Indexed Job completions
    image: str | None = None  # container image (Kubernetes; pyxis on Slurm)

    @property
    def time_minutes(self) -> int | None:
        """Slurm's time forms in whole minutes (rounded up): M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
        if not self.time:
            return None
        days, _, clock = self.time.rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        if days:  # D-H[:M[:S]]
            h, m, s = [*parts, 0, 0][:3]
            h += int(days) * 24
        else:  # M, M:S or H:M:S
            h, m, s = (0, parts[0], 0) if len(parts) == 1 else (0, *parts) if len(parts) == 2 else parts
        return h * 60 + m + (1 if s else 0)


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    job: str
    options: dict[str, Any]  # the job's options, links resolved to URIs
    resources: Resources = field(default_factory=Resources)

    @property
    def output(self) -> str:
        return str(self.options.get("output") or "")


@dataclass(frozen=True, slots=True)
class Pipeline:
    path: str
    workdir: str
    steps: list[Step]

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise DistilError(f"{self.path} has no step '{name}' (steps: {', '.join(s.name for s in self.steps)})")


def is_absolute(uri: str) -> bool:
    return "://" in uri or uri.startswith("/")


def under(workdir: str, uri: str) -> str:
    """`uri` relative to the pipeline's workdir, unless it is absolute."""
    return uri if is_absolute(uri) or not workdir else posixpath.join(workdir.rstrip("/"), uri)


def producer_of(uri: str, outputs: Mapping[str, str]) -> str | None:
    """The step whose output (name → URI) is `uri` or holds it (`student/final`), if any."""
    for name, out in outputs.items():
        if uri == out or uri.startswith(out.rstrip("/") + "/"):
            return name
    return None


def _suggest(word: str, choices: list[str]) -> str:
    hint = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean '{hint[0]}'?)" if hint else ""


def _resources(raw: Any, where: str, job: str) -> Resources:
    if raw is None:
        return Resources()
    if not isinstance(raw, dict):
        raise DistilError(f"{where}: resources must be a mapping (cpus, memory, gpus, nodes, time, shards, image)")
    names = list(Resources.__dataclass_fields__)
    for key in raw:
        if key not in names:
            raise DistilError(f"{where}: unknown resource '{key}'{_suggest(str(key), names)}; known: {', '.join(names)}")
    values: dict[str, Any] = {}
    for key in ("cpus", "gpus", "nodes", "shards"):
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "gpus" else 1):
                raise DistilError(f"{where}: resources.{key} {value!r}: expected a whole number >= "
                                  f"{0 if key == 'gpus' else 1}")
            values[key] = value
    if "memory" in raw:
        if not _MEMORY.match(str(raw["memory"])):
            raise DistilError(f"{where}: resources.memory {raw['memory']!r}: expected a size such as 16G or 512M")
        values["memory"] = str(raw["memory"])
    if "time" in raw:
        if not _TIME.match(str(raw["time"])):
            raise DistilError(f"{where}: resources.time {raw['time']!r}: expected Slurm's form: minutes (90), "
                              "h:mm:ss or d-hh:mm")
        values["time"] = str(raw["time"])
    if "image" in raw:
        values["image"] = str(raw["image"])
    if values.get("shards", 1) > 1 and not JOBS[job].sharded:
        sharded = ", ".join(n for n, s in JOBS.items() if s.sharded)
        raise DistilError(f"{where}: resources.shards applies to sharded jobs ({sharded}), not {job}: remove it")
    return Resources(**values)


def _step(raw: Any, where: str, name: str | None, job: str | None) -> Step:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise DistilError(f"{where} is a {type(raw).__name__}, not a mapping of option: value: indent its options")
    job = job or raw.get("job")
    if not job:
        raise DistilError(f"{where} has no job: add 'job: <one of {', '.join(JOBS)}>'")
    if job not in JOBS:
        raise DistilError(f"{where}: unknown job '{job}'{_suggest(str(job), list(JOBS))}; jobs: {', '.join(JOBS)}")
    name = str(name or raw.get("name") or job)
    if not _NAME.match(name):
        raise DistilError(f"{where}: step name '{name}' must be lowercase letters, digits and dashes")
    options = {str(k).replace("-", "_"): v for k, v in raw.items() if k not in STEP_KEYS}
    return Step(name, str(job), options, _resources(raw.get("resources"), where, str(job)))


def load_pipeline(path: str, workdir: str | None = None) -> Pipeline:
    """Read and check the file's shape; links and options are checked by `plan.plan_pipeline`."""
    p = Path(path)
    if not p.is_file():
        raise DistilError(f"pipeline file {path} not found: check the path")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise DistilError(f"pipeline file {path} is not valid YAML ({first_line(e)}): fix the file") from None
    if not isinstance(data, dict):
        raise DistilError(f"pipeline file {path} must be a mapping: job sections, or a 'steps:' list")
    data = expand_env_refs(data, path)
    for key in data:
        if key not in TOP_KEYS and key not in JOBS:
            raise DistilError(f"{path}: '{key}' is neither a job nor a pipeline key{_suggest(str(key), [*JOBS, *TOP_KEYS])}"
                              f"; jobs: {', '.join(JOBS)}")
    sections = [k for k in data if k in JOBS]
    if "steps" in data:
        if sections:
            raise DistilError(f"{path} has both a 'steps:' list and job sections ({', '.join(sections)}): "
                              "move the sections into the list")
        if not isinstance(data["steps"], list) or not data["steps"]:
            raise DistilError(f"{path}: 'steps' must be a non-empty list of steps (name, job, options)")
        steps = [_step(raw, f"{path} step {i + 1}", None, None) for i, raw in enumerate(data["steps"])]
    else:
        if not sections:
            raise DistilError(f"{path} has no steps: add a section per job ({', '.join(JOBS)}) or a 'steps:' list")
        steps = [_step(data[job], f"{path} [{job}]", job, job) for job in sections]
    names = [s.name for s in steps]
    for name in names:
        if names.count(name) > 1:
            raise DistilError(f"{path}: two steps are named '{name}': give each a distinct 'name:'")
    root = workdir if workdir is not None else str(data.get("workdir") or "")
    return Pipeline(str(path), root, steps)
