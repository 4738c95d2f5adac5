"""Property: however often precompute-embeddings is SIGKILLed, and wherever, rerunning the same
command ends with every row exactly once, the same values as an uninterrupted run, and a manifest
that verifies. Kill points are drawn at random (seeded, so a failure replays) across model load,
embedding, chunk publication and finalisation."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import head_jsonl

pytestmark = pytest.mark.slow
KILLS = 6
ARGS = ["precompute-embeddings", "--teacher", "minilm", "--text-column", "en", "--max-length", "32",
        "--chunk-rows", "10", "--batch-size", "5", "--dtype", "float32"]


def test_random_kills_then_resume_give_every_row_once_and_a_verified_manifest(cli, data_path, tmp_path):
    src = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "in.jsonl", 100)
    reference, out = tmp_path / "ref", tmp_path / "emb"
    cli(*ARGS, "--input", str(src), "--output", str(reference), check=True)
    rng = random.Random(1234)
    for _ in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-m", "distil_jobs.cli", *ARGS, "--input", str(src),
                                 "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 8.0))  # model load takes ~3 s here, the 100 rows a few more
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        if (out / "manifest.json").exists():
            break
    cli(*ARGS, "--input", str(src), "--output", str(out), check=True)

    got = pq.read_table(sorted((out / "data").glob("part-*.parquet"))).to_pydict()
    want = pq.read_table(sorted((reference / "data").glob("part-*.parquet"))).to_pydict()
    assert got["row_idx"] == list(range(100))  # every row once, in order
    assert got["en"] == want["en"]
    np.testing.assert_allclose(np.asarray(got["teacher_embedding_final"]),
                               np.asarray(want["teacher_embedding_final"]), atol=1e-5)
    check = cli("verify", str(out))
    assert check.returncode == 0, check.stderr
    assert "100 rows" in check.stdout
