"""slurm/pipeline.sh on a real (loopback) Slurm: a 2-task precompute array → train a 2-layer
student for a few steps → evaluate it on a tiny local task, chained with afterok, in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import head_jsonl

pytestmark = [pytest.mark.server, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def job_fields(job_id: str) -> list[dict[str, str]]:
    shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    return [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in shown.splitlines()]


def finished(job_id: str) -> bool:
    states = [j.get("JobState") for j in job_fields(job_id)]
    return bool(states) and all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for s in states)


def test_pipeline_chains_precompute_train_evaluate_in_order(slurm_cluster, data_path, tmp_path):
    rows = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "train.jsonl", 120)
    head_jsonl(data_path / "stsb" / "test.jsonl", tmp_path / "stsb" / "test.jsonl", 60)
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"""\
precompute-embeddings:
  input: {rows}
  text_column: en
  pair_column: yo
  teacher: minilm
  max_length: 32
  chunk_rows: 30
  output: ${{RUNS}}/emb
train-student:
  targets: ${{RUNS}}/emb
  student: minilm
  student_layers: [0, 1]
  max_length: 32
  batch_size: 8
  max_steps: 6
  dev_fraction: 0.1
  eval_steps: 0
  save_steps: 0
  output: ${{RUNS}}/student
evaluate-mteb:
  models: ["${{RUNS}}/student"]
  labels: [student-2layer]
  local_tasks:
    - {{kind: sts, name: STSB, path: "{tmp_path / 'stsb'}", columns: "sentence1:sentence2", langs: eng-Latn}}
  output: ${{RUNS}}/report
""")
    runs, logs = tmp_path / "runs", tmp_path / "logs"
    logs.mkdir()
    small = f"--cpus-per-task=1 --mem=2G --time=30 --output={logs}/%x-%j-%a.out"
    env = {**os.environ, "RUNS": str(runs), "SHARDS": "2", "SBATCH_ARGS": small,
           "TRAIN_SBATCH": "--nodes=1 --gpus-per-node=0 --mem=3G", "EVALUATE_SBATCH": "--gpus-per-node=0",
           "DISTIL_CMD": f"{sys.executable} -m distil_jobs.cli"}
    done = subprocess.run([str(REPO / "slurm" / "pipeline.sh"), str(config)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    stages = dict(line.split() for line in done.stdout.splitlines())
    assert list(stages) == ["precompute", "train", "evaluate"]
    assert job_fields(stages["train"])[0]["Dependency"].startswith(f"afterok:{stages['precompute']}")

    deadline = time.time() + 900
    while not finished(stages["evaluate"]):
        assert time.time() < deadline, "the pipeline did not finish in 15 min"
        time.sleep(1)
    logs_text = "\n".join(p.read_text() for p in sorted(logs.glob("*.out")))
    jobs = {name: job_fields(job_id) for name, job_id in stages.items()}
    assert all(j["JobState"] == "COMPLETED" for tasks in jobs.values() for j in tasks), logs_text[-4000:]
    assert len(jobs["precompute"]) == 2
    # In order: each stage started only after the one before had ended.
    assert max(j["EndTime"] for j in jobs["precompute"]) <= jobs["train"][0]["StartTime"]
    assert jobs["train"][0]["EndTime"] <= jobs["evaluate"][0]["StartTime"]
    assert json.loads((runs / "emb" / "manifest.json").read_text())["extra"]["shards"] == 2
    assert json.loads((runs / "student" / "manifest.json").read_text())["extra"]["steps"] == 6
    report = runs / "report"
    assert (report / "manifest.json").exists() and "STSB" in (report / "report.md").read_text()
