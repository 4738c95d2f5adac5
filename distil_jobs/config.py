"""Job configs: one dataclass per job, filled from flags > DISTIL_* env > YAML file > defaults.

A job declares its fields with `setting(...)`; `build_command` turns the dataclass into a click
command whose options, env variables and YAML keys all share the field names. Every value read
from a string (env, YAML, flag) goes through the same parser, so a bad value gets the same
one-line error wherever it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml

from distil_jobs.errors import DistilError

ENV_PREFIX = "DISTIL_"
REDACTED = "***"
# Keys that look like credentials are redacted wherever a config is shown or stored.
_SECRET_KEY = re.compile(r"(token|secret|password|api_key|access_key|credential)", re.I)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def setting(
    default: Any = None,
    help: str = "",
    *,
    choices: tuple[str, ...] | None = None,
    secret: bool = False,
    required: bool = False,
    aliases: tuple[str, ...] = (),
) -> Any:
    """Declare a config field. `help` becomes the --help text of its CLI option.

    `aliases` are extra flag names, e.g. ("--model",) beside --models. List fields are
    repeatable flags; a list of `dict` items also takes YAML mappings (strings pass through)."""
    meta = {"help": help, "choices": choices, "secret": secret, "required": required, "aliases": aliases}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=default: list(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: type  # str, int, float, bool or list
    item: type | None  # element type for lists
    optional: bool
    default: Any
    help: str
    choices: tuple[str, ...] | None
    secret: bool
    required: bool
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def field_specs(cls: type) -> list[FieldSpec]:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        tp, optional = hints[f.name], False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            optional, tp = True, args[0]
        item = None
        if typing.get_origin(tp) is list:
            item, tp = typing.get_args(tp)[0], list
            # list[dict | str] and the like: structured items (YAML mappings) the job parses itself.
            if item is dict or typing.get_origin(item) in (dict, typing.Union, types.UnionType):
                item = dict
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        m = f.metadata
        specs.append(
            FieldSpec(f.name, tp, item, optional, default, m.get("help", ""), m.get("choices"),
                      m.get("secret", False), m.get("required", False), tuple(m.get("aliases", ())))
        )
    return specs


def _parse_scalar(kind: type, raw: Any, where: str) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        s = str(raw).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise DistilError(f"{where}={raw!r}: expected true/false")
    if kind is int:
        if isinstance(raw, bool):
            raise DistilError(f"{where}={raw!r}: expected an integer")
        try:
            return int(str(raw).replace("_", ""))
        except ValueError:
            raise DistilError(f"{where}={raw!r}: expected an integer") from None
    if kind is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise DistilError(f"{where}={raw!r}: expected a number") from None
    if isinstance(raw, (dict, list)):
        raise DistilError(f"{where}: expected a single value, got {type(raw).__name__}")
    return str(raw)


def parse_value(spec: FieldSpec, raw: Any, where: str) -> Any:
    """Turn a raw value (string from flag/env, or YAML scalar/list) into the field's type."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
        if spec.optional or spec.kind is list:
            return [] if spec.kind is list else None
        raise DistilError(f"{where}: a value is required")
    if spec.kind is list and spec.item is dict:
        # Structured items: a YAML list of mappings/strings, a repeated flag, or ';'-separated text
        # (commas belong to the item, e.g. "kind=sts,path=DIR").
        raw_items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        parts = [p for r in raw_items for p in (r.split(";") if isinstance(r, str) else [r])]
        return [{str(k): v for k, v in p.items()} if isinstance(p, dict) else str(p).strip()
                for p in parts if not (isinstance(p, str) and not p.strip())]
    if spec.kind is list:
        if isinstance(raw, tuple):  # a repeatable flag: each occurrence may itself be "a,b"
            raw = [s for r in raw for s in str(r).split(",") if s.strip()]
        items = raw if isinstance(raw, list) else [s for s in str(raw).split(",") if s.strip()]
        return [_parse_scalar(spec.item or str, i.strip() if isinstance(i, str) else i, where) for i in items]
    value = _parse_scalar(spec.kind, raw, where)
    if spec.choices and value not in spec.choices:
        raise DistilError(f"{where}={value!r}: must be one of {', '.join(spec.choices)}")
    return value


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
        first = str(e).splitlines()[0]
        raise DistilError(f"config file {path} is not valid YAML ({first}): fix the file") from None
    if not isinstance(data, dict):
        raise DistilError(f"config file {path} must hold a mapping of keys to values")
    sections = {k for k in data if k in known_jobs}
    if sections:
        if job not in data:
            raise DistilError(f"config file {path} has no '{job}' section (it has: {', '.join(sorted(sections))})")
        data = data[job] or {}
        source = f"{path} [{job}]"
    else:
        source = path
    return {str(k).replace("-", "_"): expand_env_refs(v, source) for k, v in data.items()}


@dataclasses.dataclass(slots=True)
class Resolved:
    values: dict[str, Any]
    sources: dict[str, str]


def resolve(cls: type, flags: dict[str, Any], file_values: dict[str, Any], file_name: str | None,
            env: typing.Mapping[str, str] | None = None) -> Resolved:
    env = os.environ if env is None else env
    specs = field_specs(cls)
    names = {s.name for s in specs}
    unknown = sorted(set(file_values) - names)
    if unknown:
        hint = difflib.get_close_matches(unknown[0], names, n=1)
        did = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise DistilError(
            f"unknown key '{unknown[0]}' in {file_name}{did}; valid keys: {', '.join(sorted(names))}"
        )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in specs:
        if flags.get(s.name) is not None and flags.get(s.name) != ():
            values[s.name], sources[s.name] = parse_value(s, flags[s.name], s.flag), "flag"
        elif s.env in env:
            values[s.name], sources[s.name] = parse_value(s, env[s.env], s.env), "env"
        elif s.name in file_values:
            values[s.name], sources[s.name] = parse_value(s, file_values[s.name], f"{s.name} in {file_name}"), "file"
        else:
            values[s.name], sources[s.name] = s.default, "default"
        if s.required and values[s.name] in (None, "", []):
            raise DistilError(f"{s.flag} is required (or set {s.env}, or '{s.name}' in --config)")
    return Resolved(values, sources)


def redact(values: dict[str, Any], cls: type | None = None) -> dict[str, Any]:
    secret = {s.name for s in field_specs(cls) if s.secret} if cls else set()
    return {
        k: (REDACTED if v not in (None, "") and (k in secret or _SECRET_KEY.search(k)) else v)
        for k, v in values.items()
    }


def config_dict(cfg: Any) -> dict[str, Any]:
    """The config as a plain dict with secrets redacted, for logs and manifests."""
    return redact(dataclasses.asdict(cfg), type(cfg))


def describe(job: str, cfg: Any, sources: dict[str, str]) -> str:
    shown = config_dict(cfg)
    lines = [f"# {job}: resolved config (source of each value after '#')"]
    for k, v in shown.items():
        dumped = yaml.safe_dump({k: v}, default_flow_style=True, width=10_000).strip()[1:-1]
        lines.append(f"{dumped}  # {sources.get(k, 'default')}")
    return "\n".join(lines)


def _click_option(spec: FieldSpec) -> click.Option:
    help_text = spec.help
    if spec.default not in (None, "", []) and not spec.secret:
        shown = ",".join(map(str, spec.default)) if isinstance(spec.default, list) else spec.default
        help_text += f"  [default: {shown}]"
    help_text += f"  [env: {spec.env}]"
    if spec.choices:
        help_text += f"  [choices: {'|'.join(spec.choices)}]"
    if spec.kind is bool:
        return click.Option([f"{spec.flag}/--no-{spec.flag[2:]}", spec.name], default=None, help=help_text)
    if spec.kind is list:
        return click.Option([spec.flag, *spec.aliases, spec.name], type=click.STRING, multiple=True, default=None,
                            help=help_text, metavar="TEXT" if spec.item is dict else "A,B,...")
    # Values stay strings here and go through parse_value, so a bad flag, env value or YAML
    # value all get the same one-line error.
    metavar = {list: "A,B,...", int: "INT", float: "FLOAT"}.get(spec.kind, "CHOICE" if spec.choices else "TEXT")
    return click.Option([spec.flag, *spec.aliases, spec.name], type=click.STRING, default=None, help=help_text,
                        metavar=metavar)


def build_command(
    name: str,
    cls: type,
    run: Callable[[Any], None],
    help: str,
    known_jobs: set[str],
    validate: Callable[[Any], None] | None = None,
) -> click.Command:
    """A click command for one job: its options come from the config dataclass."""

    def callback(config: str | None, dry_run: bool, **flags: Any) -> None:
        from distil_jobs.log import get_logger

        config = config or os.environ.get(ENV_PREFIX + "CONFIG")
        file_values = load_config_file(config, name, known_jobs) if config else {}
        resolved = resolve(cls, flags, file_values, config)
        cfg = cls(**resolved.values)
        if validate:
            validate(cfg)
        text = describe(name, cfg, resolved.sources)
        if dry_run:
            click.echo(text)
            return
        get_logger(name).info("%s", text)
        run(cfg)

    params: list[click.Parameter] = [_click_option(s) for s in field_specs(cls)]
    params.append(click.Option(["--config", "config"], default=None,
                               help="YAML file with keys named like the options, or a pipeline file "
                                    "with one section per job.  [env: DISTIL_CONFIG]"))
    params.append(click.Option(["--dry-run", "dry_run"], is_flag=True, default=False,
                               help="Print the resolved config (secrets redacted) and exit."))
    return click.Command(name, callback=callback, params=params, help=help, short_help=help.split("\n")[0])


def exit_with_error(err: DistilError) -> typing.NoReturn:
    click.echo(f"error: {err}", err=True)
    sys.exit(err.exit_code)
