"""Config fields: declared once with `setting(...)`, parsed the same way from flags, env and YAML.

Everything about an option is said on the option: its help, choices, bounds (`min`, `max`),
whether it is a secret, and whether it changes the result (`fingerprint=True`: a resume
with another value is refused). Nothing keeps a second list of option names.

A job's config may be *composed* of groups (`compose`): shared fields plus each method's own
fields, tagged with the methods that own them. The selector field (e.g. `method`) picks the
active group; an option of another group is an error that names its group.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from distil_jobs.errors import DistilError

ENV_PREFIX = "DISTIL_"
REDACTED = "***"
# A name that holds a credential, judged by its last word: hf_token, aws_secret_access_key,
# wandb_api_key, password; not token_counts or tokenizer. A field may say for itself with
# setting(secret=...): max_per_token ends like a credential but counts vectors.
_SECRET_NAME = re.compile(r"(^|_)(token|api_?key|password|passwd|passphrase|secret|secret_key|access_key|"
                          r"secret_access_key|access_key_id|credentials?|private_key)$", re.I)


def is_secret_name(name: str) -> bool:
    """Whether an option, config key or variable named `name` holds a credential (by its name)."""
    return bool(_SECRET_NAME.search(name.replace("-", "_")))
_SELECTOR_ATTR = "__distil_selector__"
_GROUPS_ATTR = "__distil_groups__"


def setting(
    default: Any = None,
    help: str = "",
    *,
    choices: tuple[str, ...] | None = None,
    secret: bool | None = None,
    required: bool = False,
    aliases: tuple[str, ...] = (),
    fingerprint: bool = False,
    data: bool = False,
    min: float | None = None,
    max: float | None = None,
) -> Any:
    """Declare a config field. `help` becomes the --help text of its CLI option.

    `secret`: redact the value wherever the config is shown or stored; by default judged by the
    name (`is_secret_name`).
    `aliases` are extra flag names, e.g. ("--model",) beside --models. List fields are
    repeatable flags; a list of `dict` items also takes YAML mappings (strings pass through).
    `fingerprint`: the value changes what the job produces, so resuming with another one is refused.
    `data`: the value is a dataset URI whose *content* the result depends on: a resume over changed
    content is refused too (`content_of`), whatever the URI says.
    `min`/`max`: inclusive bounds, checked wherever the value comes from (for lists, on each item)."""
    meta = {"help": help, "choices": choices, "secret": secret, "required": required, "aliases": aliases,
            "fingerprint": fingerprint or data, "data": data, "min": min, "max": max}
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
    fingerprint: bool = False
    min: float | None = None
    max: float | None = None
    owners: tuple[str, ...] = ()  # groups (methods) this option belongs to; empty = shared
    data: bool = False  # a dataset URI: its content enters the run's fingerprint
    group_defaults: tuple[tuple[str, Any], ...] = ()  # (group, default) where owning groups' defaults differ

    def default_for(self, group: str | None) -> Any:
        return dict(self.group_defaults).get(group, self.default)

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
        secret = is_secret_name(f.name) if m.get("secret") is None else m["secret"]
        specs.append(
            FieldSpec(f.name, tp, item, optional, default, m.get("help", ""), m.get("choices"),
                      secret, m.get("required", False), tuple(m.get("aliases", ())),
                      m.get("fingerprint", False), m.get("min"), m.get("max"), tuple(m.get("owners", ())),
                      m.get("data", False), tuple(m.get("group_defaults", {}).items()))
        )
    return specs


# ---------------------------------------------------------------- parsing


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


def _check_bounds(spec: FieldSpec, value: Any, where: str) -> None:
    if spec.min is not None and value < spec.min:
        raise DistilError(f"{where}={value!r}: must be at least {spec.min:g}")
    if spec.max is not None and value > spec.max:
        raise DistilError(f"{where}={value!r}: must be at most {spec.max:g}")


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
        values = [_parse_scalar(spec.item or str, i.strip() if isinstance(i, str) else i, where) for i in items]
        for v in values:
            _check_bounds(spec, v, where)
        return values
    value = _parse_scalar(spec.kind, raw, where)
    if spec.choices and value not in spec.choices:
        raise DistilError(f"{where}={value!r}: must be one of {', '.join(spec.choices)}")
    _check_bounds(spec, value, where)
    return value


# ---------------------------------------------------------------- resolution


@dataclasses.dataclass(slots=True)
class Resolved:
    values: dict[str, Any]
    sources: dict[str, str]


def resolve(cls: type, flags: dict[str, Any], file_values: dict[str, Any], file_name: str | None,
            env: Mapping[str, str] | None = None) -> Resolved:
    """flag > DISTIL_* env > file > default, each value parsed and bounds-checked the same way."""
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
            # The selector is a shared option, resolved before any group's: its group's default applies.
            values[s.name], sources[s.name] = s.default_for(values.get(selector_of(cls) or "")), "default"
        if s.required and values[s.name] in (None, "", []):
            raise DistilError(f"{s.flag} is required (or set {s.env}, or '{s.name}' in --config)")
    check_groups(cls, values, sources)
    return Resolved(values, sources)


# ---------------------------------------------------------------- groups (per-method options)


def compose(name: str, shared: type, groups: Mapping[str, type], selector: str) -> type:
    """One flat config class: `shared`'s fields, then each group's own, tagged with their owners.

    Several groups may declare the same option (e.g. two methods with a `teacher`) only with the
    same type; it then belongs to all of them, and where their defaults differ (mlm's --alpha-ce 5,
    qa's 0.5) the selected group's applies. The value of `selector` picks the group."""
    hints = typing.get_type_hints(shared)
    fields: dict[str, tuple[Any, dataclasses.Field[Any], list[str]]] = {
        f.name: (hints[f.name], f, []) for f in dataclasses.fields(shared)}
    defaults: dict[str, dict[str, Any]] = {}  # option -> {group: its default}
    for group, cls in groups.items():
        group_hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in fields:
                tp, _, owners = fields[f.name]
                if not owners or tp != group_hints[f.name]:
                    where = "a shared option" if not owners else f"an option of {', '.join(owners)}"
                    raise TypeError(f"{group} declares '{f.name}', already {where}, differently")
                owners.append(group)
            else:
                fields[f.name] = (group_hints[f.name], f, [group])
            defaults.setdefault(f.name, {})[group] = _default(f)
    made = []
    for fname, (tp, f, owners) in fields.items():
        meta = dict(f.metadata) | ({"owners": tuple(owners)} if owners else {})
        if len({repr(v) for v in defaults.get(fname, {}).values()}) > 1:
            meta["group_defaults"] = defaults[fname]
        copy = (dataclasses.field(default_factory=f.default_factory, metadata=meta)
                if f.default_factory is not dataclasses.MISSING else dataclasses.field(default=f.default, metadata=meta))
        made.append((fname, tp, copy))
    cls = dataclasses.make_dataclass(name, made, kw_only=True, slots=True)
    # Pickled into spawned ranks by name: it must be found where the shared class lives.
    cls.__module__ = shared.__module__
    setattr(cls, _SELECTOR_ATTR, selector)
    setattr(cls, _GROUPS_ATTR, tuple(groups))
    return cls


def _default(f: dataclasses.Field[Any]) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def selector_of(cls: type) -> str | None:
    return getattr(cls, _SELECTOR_ATTR, None)


def active_specs(cls: type, values: Mapping[str, Any]) -> list[FieldSpec]:
    """The shared options and those of the selected group."""
    selector = selector_of(cls)
    chosen = values.get(selector) if selector else None
    return [s for s in field_specs(cls) if not s.owners or chosen in s.owners]


def check_groups(cls: type, values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """An option of another method, set anywhere but its default, is an error naming its method."""
    selector = selector_of(cls)
    if not selector:
        return
    chosen = values[selector]
    groups = getattr(cls, _GROUPS_ATTR)
    if chosen not in groups:
        raise DistilError(f"--{selector} {chosen!r}: must be one of {', '.join(groups)}")
    for s in field_specs(cls):
        if s.owners and chosen not in s.owners and sources.get(s.name, "default") != "default":
            owners = " / ".join(s.owners)
            raise DistilError(f"{s.flag} belongs to --{selector} {owners}, not --{selector} {chosen}: "
                              f"remove it (from the {sources[s.name]}) or pass --{selector} {s.owners[0]}")


def group_options(cfg: Any, cls: type) -> Any:
    """The selected group's own options object (e.g. a method's Options) from a composed config."""
    return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


# ---------------------------------------------------------------- views of a config


def fingerprint_of(cfg: Any) -> dict[str, Any]:
    """The values of the active options declared `fingerprint=True`: what the result depends on."""
    values = {s.name: getattr(cfg, s.name) for s in field_specs(type(cfg))}
    return {s.name: values[s.name] for s in active_specs(type(cfg), values) if s.fingerprint}


def content_of(cfg: Any) -> dict[str, Any]:
    """A content fingerprint of every active dataset option (`data=True`) that is set: what the inputs
    hold, not what they are called. Keys are `content:<option>`; see `artifacts.fingerprint`."""
    from distil_jobs.artifacts.fingerprint import content_fingerprint

    values = {s.name: getattr(cfg, s.name) for s in field_specs(type(cfg))}
    return {f"content:{s.name}": content_fingerprint(values[s.name])
            for s in active_specs(type(cfg), values) if s.data and values[s.name]}


def redact(values: dict[str, Any], cls: type | None = None) -> dict[str, Any]:
    """`values` with the credentials masked: a field of `cls` says whether it is one, any other key
    is judged by its name."""
    secret = {s.name: s.secret for s in field_specs(cls)} if cls else {}
    return {k: (REDACTED if v not in (None, "") and secret.get(k, is_secret_name(k)) else v)
            for k, v in values.items()}


def config_dict(cfg: Any) -> dict[str, Any]:
    """The active options as a plain dict with secrets redacted, for logs and manifests."""
    values = {s.name: getattr(cfg, s.name) for s in field_specs(type(cfg))}
    active = {s.name for s in active_specs(type(cfg), values)}
    return redact({k: v for k, v in values.items() if k in active}, type(cfg))
