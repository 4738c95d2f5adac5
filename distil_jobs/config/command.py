"""A job's config dataclass as a click command: one option per field, `--config`, `--dry-run`,
`--wait-for-inputs` (every job: see `artifacts.wait`).

Values stay strings in click and go through `fields.parse_value`, so a bad flag, env value or
YAML value all get the same one-line error. A composed config (shared + per-method options)
shows, in `--help`, the shared options and those of the method named on the command line
(or in DISTIL_METHOD); without one it lists every method's options under its own heading.
"""

from __future__ import annotations

import os
import sys
import typing
from collections.abc import Callable
from typing import Any

import click
import yaml

from distil_jobs.config.fields import (
    ENV_PREFIX,
    FieldSpec,
    config_dict,
    field_specs,
    resolve,
    selector_of,
)
from distil_jobs.config.files import load_config_file
from distil_jobs.errors import DistilError

WAIT_KEY = "wait_for_inputs"  # also a key of --config files (flat or a job's section)


def describe(job: str, cfg: Any, sources: dict[str, str]) -> str:
    shown = config_dict(cfg)
    lines = [f"# {job}: resolved config (source of each value after '#')"]
    for k, v in shown.items():
        dumped = yaml.safe_dump({k: v}, default_flow_style=True, width=10_000).strip()[1:-1]
        lines.append(f"{dumped}  # {sources.get(k, 'default')}")
    return "\n".join(lines)


def _click_option(spec: FieldSpec) -> click.Option:
    help_text = spec.help
    if spec.group_defaults:
        help_text += "  [default: " + ", ".join(f"{v} with {g}" for g, v in spec.group_defaults) + "]"
    elif spec.default not in (None, "", []) and not spec.secret:
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
    metavar = {int: "INT", float: "FLOAT"}.get(spec.kind, "CHOICE" if spec.choices else "TEXT")
    return click.Option([spec.flag, *spec.aliases, spec.name], type=click.STRING, default=None, help=help_text,
                        metavar=metavar)


class JobCommand(click.Command):
    """A click command whose --help groups per-method options under their method."""

    def __init__(self, *args: Any, config_cls: type, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config_cls = config_cls

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["distil_argv"] = list(args)  # --help runs before --method is parsed: look it up here
        return super().parse_args(ctx, args)

    def _chosen_group(self, ctx: click.Context, selector: str) -> str | None:
        argv = ctx.meta.get("distil_argv", [])
        flag = "--" + selector.replace("_", "-")
        for i, a in enumerate(argv):
            if a == flag and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
        return os.environ.get(ENV_PREFIX + selector.upper())

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        selector = selector_of(self.config_cls)
        if not selector:
            return super().format_options(ctx, formatter)
        specs = {s.name: s for s in field_specs(self.config_cls)}
        shared = f"Options (every {selector})"
        sections: dict[str, list[tuple[str, str]]] = {shared: []}
        chosen = self._chosen_group(ctx, selector)
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            spec = specs.get(param.name or "")
            if record is None:
                continue
            if spec is None or not spec.owners:
                sections[shared].append(record)
            elif chosen is None or chosen in spec.owners:
                for owner in spec.owners if chosen is None else [chosen]:
                    sections.setdefault(f"Options of --{selector} {owner}", []).append(record)
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows)


def _wait_setting(flag: str | None, file_value: Any, config: str | None) -> tuple[float, str]:
    """--wait-for-inputs in seconds and where it came from: flag > DISTIL_WAIT_FOR_INPUTS > file > 0."""
    from distil_jobs.artifacts.wait import parse_wait

    env = ENV_PREFIX + WAIT_KEY.upper()
    if flag is not None:
        return parse_wait(flag, "--wait-for-inputs"), "flag"
    if os.environ.get(env):
        return parse_wait(os.environ[env], env), "env"
    if file_value is not None:
        return parse_wait(file_value, f"{WAIT_KEY} in {config}"), "file"
    return 0.0, "default"


def build_command(
    name: str,
    cls: type,
    run: Callable[[Any], None],
    help: str,
    known_jobs: set[str],
    validate: Callable[[Any], None] | None = None,
) -> click.Command:
    """A click command for one job: its options come from the config dataclass."""

    def callback(config: str | None, dry_run: bool, wait_for_inputs: str | None, **flags: Any) -> None:
        from distil_jobs.artifacts.wait import wait_for_inputs as wait
        from distil_jobs.log import get_logger

        config = config or os.environ.get(ENV_PREFIX + "CONFIG")
        file_values = load_config_file(config, name, known_jobs) if config else {}
        # Not a config field: it changes when the job starts, not what it makes (no fingerprint, no claim).
        wait_s, wait_source = _wait_setting(wait_for_inputs, file_values.pop(WAIT_KEY, None), config)
        resolved = resolve(cls, flags, file_values, config)
        cfg = cls(**resolved.values)
        if validate:
            validate(cfg)
        text = describe(name, cfg, resolved.sources)
        if wait_s:
            text += f"\n{WAIT_KEY}: {wait_s:g}  # {wait_source}"
        if dry_run:
            click.echo(text)  # never waits: a dry run only shows what would run
            return
        get_logger(name).info("%s", text)
        wait(name, cfg, wait_s)
        run(cfg)

    params: list[click.Parameter] = [_click_option(s) for s in field_specs(cls)]
    params.append(click.Option(["--config", "config"], default=None,
                               help="YAML file with keys named like the options, or a pipeline file "
                                    "with one section per job.  [env: DISTIL_CONFIG]"))
    params.append(click.Option(["--dry-run", "dry_run"], is_flag=True, default=False,
                               help="Print the resolved config (secrets redacted) and exit."))
    params.append(click.Option(["--wait-for-inputs", "wait_for_inputs"], default=None, metavar="SECONDS",
                               help="First wait up to SECONDS for each input another job is still producing "
                                    "(not there yet, or no manifest.json yet); on timeout exit 1, so a "
                                    "launcher retries.  [default: 0, don't wait]  [env: DISTIL_WAIT_FOR_INPUTS]"))
    return JobCommand(name, callback=callback, params=params, help=help, short_help=help.split("\n")[0],
                      config_cls=cls)


def exit_with_error(err: DistilError) -> typing.NoReturn:
    click.echo(f"error: {err}", err=True)
    sys.exit(err.exit_code)



