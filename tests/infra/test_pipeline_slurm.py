"""`distil-jobs pipeline run --launcher slurm` on the real loopback Slurm (scripts/slurm-up.sh):
each step is submitted after the steps it reads (afterok), the sharded precompute as an array, and
the report equals the one the same file makes with --launcher local."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import head_jsonl

pytestmark = [pytest.mark.server, pytest.mark.slow]

PIPELINE = """\
precompute-embeddings:
  input: {rows}
  text_column: en
  pair_column: yo
  teacher: minilm
  max_length: 32
  output: embeddings
  resources: {{shards: 2, cpus: 1, memory: 3G, time: 20}}
train-student:
  targets: embeddings
  student: minilm
  student_layers: [0, 1]
  max_length: 32
  batch_size: 16
  max_steps: 4
  eval_steps: 0
  save_steps: 0
  output: student
  resources: {{cpus: 1, memory: 3G, time: 20}}
evaluate-mteb:
  models: [minilm, student]
  labels: [teacher, student]
  max_test_rows: 60
  local_tasks:
    - {{kind: bitext, name: Menyo, path: {menyo}, split: test, columns: "en:yo"}}
  output: report
  resources: {{cpus: 1, memory: 3G, time: 20}}
"""


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distil_jobs.cli", "pipeline", *args], capture_output=True,
                          text=True, env=env, timeout=900, check=False)


def test_slurm_chain_runs_in_order_and_its_report_equals_the_local_one(slurm_cluster, data_path, tmp_path):
    rows = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "data" / "train.jsonl", 96)
    head_jsonl(data_path / "menyo20k" / "test.jsonl", tmp_path / "data" / "menyo" / "test.jsonl", 60)
    file = tmp_path / "tiny.yaml"
    file.write_text(PIPELINE.format(rows=rows, menyo=tmp_path / "data" / "menyo"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # the same arithmetic here and on the nodes

    local = run("run", str(file), "--workdir", str(tmp_path / "local"), env=env)
    assert local.returncode == 0, local.stdout[-2000:] + local.stderr[-3000:]

    slurm = run("run", str(file), "--workdir", str(tmp_path / "slurm"), "--launcher", "slurm", "--wait", env=env)
    assert slurm.returncode == 0, slurm.stdout[-3000:] + slurm.stderr[-3000:]
    ids = dict(re.findall(r"pipeline: (\S+) submitted: job (\d+)", slurm.stdout))
    assert list(ids) == ["precompute-embeddings", "train-student", "evaluate-mteb"], slurm.stdout
    assert f"(afterok:{ids['precompute-embeddings']})" in slurm.stdout
    assert f"(afterok:{ids['train-student']})" in slurm.stdout

    # The order really held: each job started after the one it reads from ended.
    def times(job_id: str) -> tuple[str, str]:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
        fields = dict(f.split("=", 1) for f in shown.split() if "=" in f)
        return fields["StartTime"], fields["EndTime"]

    assert times(ids["train-student"])[0] >= times(ids["precompute-embeddings"])[1]
    assert times(ids["evaluate-mteb"])[0] >= times(ids["train-student"])[1]
    manifest = json.loads((tmp_path / "slurm" / "embeddings" / "manifest.json").read_text())
    assert manifest["extra"]["shards"] == 2  # the array's two tasks made it

    def scores(root: Path) -> dict:
        return json.loads((root / "report" / "summary.json").read_text())["scores"]

    assert scores(tmp_path / "slurm") == scores(tmp_path / "local")

    # A rerun submits nothing: every step is done with the same settings.
    again = run("run", str(file), "--workdir", str(tmp_path / "slurm"), "--launcher", "slurm", env=env)
    assert again.returncode == 0 and "submitted" not in again.stdout, again.stdout
    status = run("status", str(file), "--workdir", str(tmp_path / "slurm"), env=env)
    assert [line.split()[1] for line in status.stdout.splitlines()] == ["done", "done", "done"], status.stdout
