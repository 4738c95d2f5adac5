"""Job configs: one dataclass per job, filled from flags > DISTIL_* env > YAML file > defaults.

A job declares its fields with `setting(...)`; `build_command` turns the dataclass into a click
command whose options, env variables and YAML keys all share the field names. Every value read
from a string (env, YAML, flag) goes through the same parser, so a bad value gets the same
one-line error wherever it came from.

- `fields`: declaring, parsing, bounds, resolution, per-method groups, fingerprints;
- `files`: YAML files and `${VAR:-default}`;
- `command`: the click command and its grouped --help.
"""

from __future__ import annotations

from distil_jobs.config.command import build_command, describe, exit_with_error
from distil_jobs.config.fields import (
    ENV_PREFIX,
    REDACTED,
    FieldSpec,
    Resolved,
    active_specs,
    compose,
    config_dict,
    content_of,
    field_specs,
    fingerprint_of,
    group_options,
    parse_value,
    redact,
    resolve,
    setting,
)
from distil_jobs.config.files import expand_env_refs, load_config_file

__all__ = ["ENV_PREFIX", "REDACTED", "FieldSpec", "Resolved", "active_specs", "build_command", "compose",
           "config_dict", "content_of", "describe", "exit_with_error", "expand_env_refs", "field_specs", "fingerprint_of",
           "group_options", "load_config_file", "parse_value", "redact", "resolve", "setting"]
