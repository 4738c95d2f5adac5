"""`distil-jobs submit --backend local`: the same launch as on Slurm, as local processes."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from tests.conftest import head_jsonl

pytest.importorskip("submitit")


def test_local_backend_runs_an_array_as_shards_and_writes_one_manifest(cli, data_path, tmp_path):
    src = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "in.jsonl", 60)
    out = tmp_path / "emb"
    done = cli("submit", "--backend", "local", "--job", "precompute-embeddings", "--array", "2", "--wait",
               "--folder", str(tmp_path / "logs" / "%j"), "--", "--input", str(src), "--output", str(out),
               "--text-column", "en", "--max-length", "32", "--chunk-rows", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("precompute-embeddings: done") == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 60 and manifest["extra"]["shards"] == 2
    rows = pq.read_table(sorted((out / "data").glob("*.parquet"))).to_pydict()
    assert rows["row_idx"] == list(range(60))


def test_a_failing_task_fails_the_submit_with_one_line(cli, tmp_path):
    done = cli("submit", "--backend", "local", "--job", "precompute-embeddings", "--wait", "--no-check",
               "--folder", str(tmp_path / "logs" / "%j"), "--",
               "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: 1 of 1 task(s) failed")
