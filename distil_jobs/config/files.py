"""YAML config files: flat (keys = options) or pipeline files (one section per job), `${VAR:-default}` expanded."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from distil_jobs.errors import DistilError, first_line

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env_refs(value: Any, source: str) -> Any:
    """Expand ${VAR} and ${VAR:-default} in YAML strings so one config runs on any machine."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name, fallback = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if fallback is not None:
                return fallback
            raise DistilError(f"{source} uses ${{{name}}} but it is not set: "
                              f"export {name} or give a default as ${{{name}:-value}}")
        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [expand_env_refs(v, source) for v in value]
    if isinstance(value, dict):
        return {k: expand_env_refs(v, source) for k, v in value.items()}
    return value


def load_config_file(path: str, job: str, known_jobs: set[str]) -> dict[str, Any]:
    """Read a YAML config. A file whose top-level keys are job names is a pipeline file:
    each job reads its own section, so one file configures a whole pipeline."""
    p = Path(path)
    if not p.is_file():
        raise DistilError(f"config file {path} not found: check --config / DISTIL_CONFIG")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise DistilError(f"config file {path} is not valid YAML ({first_line(e)}): fix the file") from None
    if not isinstance(data, dict):
        raise DistilError(f"config file {path} must hold a mapping of keys to values")
    if isinstance(data.get("steps"), list):
        raise DistilError(f"config file {path} is a pipeline with a steps: list, not one job's options: run it with "
                          f"`distil-jobs pipeline run {path}` (add --only STEP for one step)")
    sections = {k for k in data if k in known_jobs}
    if sections:
        if job not in data:
            raise DistilError(f"config file {path} has no '{job}' section (it has: {', '.join(sorted(sections))})")
        section = data[job] or {}
        source = f"{path} [{job}]"
        if not isinstance(section, dict):
            raise DistilError(f"section '{job}' of {path} is a {type(section).__name__}, not a mapping of "
                              "option: value: indent its options under the job name")
        values = {str(k).replace("-", "_"): expand_env_refs(v, source) for k, v in section.items()}
        values.pop("resources", None)  # the launcher's (distil-jobs pipeline), not the job's
        return _under_workdir(job, values, {k: data[k] for k in sections}, expand_env_refs(data.get("workdir"), path))
    return {str(k).replace("-", "_"): expand_env_refs(v, path) for k, v in data.items()}


def _under_workdir(job: str, values: dict[str, Any], sections: dict[str, Any], workdir: Any) -> dict[str, Any]:
    """A pipeline file's `workdir:` for one job run alone: its output, and every input option (the
    registry's) that names another section's output or a path inside it, live under the workdir
    unless absolute, just as `distil-jobs pipeline run` links them."""
    from distil_jobs.jobs import JOBS
    from distil_jobs.pipeline.spec import producer_of, under

    if not workdir or job not in JOBS:
        return values
    inputs = JOBS[job].inputs
    outputs = {name: under(str(workdir), str(s["output"])) for name, s in sections.items()
               if isinstance(s, dict) and s.get("output")}

    def place(value: Any) -> Any:
        if isinstance(value, list):
            return [place(v) for v in value]
        if not isinstance(value, str) or not value:
            return value
        candidate = under(str(workdir), value)
        return candidate if producer_of(candidate, outputs) else value

    placed = {k: place(v) if k in inputs else v for k, v in values.items()}
    if isinstance(values.get("output"), str) and values["output"]:
        placed["output"] = under(str(workdir), values["output"])
    return placed
