"""Exit codes are exact, every time: launchers retry 1 and 134 but never 2.

Before `distil_jobs.exits`, a usage error exited 134 ("terminate called without an active
exception") in about one run in three on a loaded machine: Arrow's I/O threads raced the
interpreter's finalisation. The race needs load to show, so each case runs several times,
three processes at once, as on a busy CI machine.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from train_helpers import STUDENT, make_targets

RUNS = 6


@pytest.fixture(scope="module")
def targets(tmp_path_factory, data_path):
    from tests.conftest import run_cli

    return make_targets(run_cli, data_path, tmp_path_factory.mktemp("targets"), rows=40)


def _run_many(args_for_run) -> list[subprocess.CompletedProcess[str]]:
    from tests.conftest import run_cli

    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda i: run_cli(*args_for_run(i)), range(RUNS)))


@pytest.mark.parametrize("bad", [["--max-rows", "0"], ["--pair-column", "fr"]], ids=["no_rows", "missing_column"])
def test_a_usage_error_exits_2_every_time(targets, tmp_path, bad):
    runs = _run_many(lambda i: ["train-student", *STUDENT, "--max-steps", "1", "--targets", str(targets),
                                *bad, "--output", str(tmp_path / f"s{i}")])
    codes = [r.returncode for r in runs]
    assert codes == [2] * RUNS, next(r.stderr[-1500:] for r in runs if r.returncode != 2)
    for r in runs:
        assert r.stderr.strip().splitlines()[-1].startswith("error: ")
        assert "terminate called" not in r.stderr and "Traceback" not in r.stderr


def test_a_finished_job_exits_0_every_time(targets, tmp_path):
    """The same race could turn a success into 134 after the manifest is written."""
    runs = _run_many(lambda i: ["inspect", "--summary", str(targets)])
    assert [r.returncode for r in runs] == [0] * RUNS


def test_an_unexpected_failure_exits_1_with_its_traceback(tmp_path):
    """Not a usage error: a launcher may retry it, and the traceback says where it broke."""
    script = ("from distil_jobs.exits import run_and_exit\n"
              "def boom():\n    raise RuntimeError('disk on fire')\n"
              "run_and_exit(boom)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "RuntimeError: disk on fire" in done.stderr
