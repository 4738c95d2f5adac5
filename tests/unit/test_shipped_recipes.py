"""Every recipe shipped in jobs/ resolves for each job it configures: a renamed option, an option
of another method or a value out of bounds fails here, not an hour into a user's run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distil_jobs.jobs import JOBS as REGISTRY

JOBS = Path(__file__).parents[2] / "jobs"


def _cases() -> list[tuple[str, tuple[str, ...]]]:
    """(recipe, jobs it may be for): a pipeline file names its jobs as sections; a flat file is for
    whichever job accepts all its keys."""
    cases = []
    for path in sorted(JOBS.glob("*.yaml")):
        keys = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "steps" in keys:
            continue  # a steps: list runs only as a pipeline (the test below)
        sections = tuple(k for k in keys if k in REGISTRY)
        cases += [(path.name, (job,)) for job in sections] or [(path.name, tuple(REGISTRY))]
    return cases


@pytest.mark.parametrize(("recipe", "jobs"), _cases())
def test_recipe_resolves(cli, recipe, jobs, tmp_path):
    errors = []
    for job in jobs:
        # --output too: a flat recipe such as evaluate.yaml leaves it to the command line.
        done = cli(job, "--config", str(JOBS / recipe), "--output", str(tmp_path / "out"), "--dry-run")
        if done.returncode == 0 and "resolved config" in done.stdout:
            return
        errors.append(f"{job}: {done.stderr.strip()[-400:]}")
    pytest.fail("\n".join(errors))


@pytest.mark.parametrize("recipe", [p.name for p in sorted(JOBS.glob("*.yaml"))
                                    if set(yaml.safe_load(p.read_text(encoding="utf-8"))) & {*REGISTRY, "steps"}])
def test_pipeline_recipe_links_and_plans(recipe, tmp_path):
    """Every pipeline file plans: its links, kinds and options hold (`pipeline run --dry-run`)."""
    from click.testing import CliRunner

    from distil_jobs.cli import main

    result = CliRunner().invoke(main, ["pipeline", "run", str(JOBS / recipe), "--workdir", str(tmp_path), "--dry-run"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "link: " in result.stdout
