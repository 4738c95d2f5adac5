"""Sense-samples for the cluster tests and bench, made by the real gather-senses job from real corpus
sentences and the packaged MiniLM, and read back per token the way the cluster job reads them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TEACHER = "minilm"
SENSE_CORPUS_ROWS = 300  # the sentences the shared sense dictionary (conftest) is gathered from


def corpus_head(data_path: Path, dest: Path, n: int) -> Path:
    """The first `n` sentences of corpus/sentences_en.tsv (with its header) as a file of their own."""
    with open(data_path / "corpus" / "sentences_en.tsv", encoding="utf-8") as f:
        lines = [next(f) for _ in range(n + 1)]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(lines), encoding="utf-8")
    return dest


def gather(cli, src: Path, out: Path, cap: int, *extra: str) -> Path:
    """`distil-jobs gather-senses` with MiniLM's last layer, as a user runs it."""
    cli("gather-senses", "--input", str(src), "--teacher", TEACHER, "--max-per-token", str(cap), "--max-length", "64",
        "--output", str(out), *extra, check=True)
    return out


class SampledVectors:
    """A sense-samples artifact in memory: each token's vectors in file order (what the cluster job sees)."""

    def __init__(self, samples: Path) -> None:
        from transformers import AutoTokenizer

        from distil_jobs.models.registry import packaged_model_path
        from distil_jobs.senses.vocab import tokenizer_fingerprint

        extra = json.loads((samples / "manifest.json").read_text())["extra"]
        self.cap, self.dim, self.vocab_size = int(extra["max_per_token"]), int(extra["dim"]), int(extra["vocab_size"])
        self.tokenizer = AutoTokenizer.from_pretrained(packaged_model_path(TEACHER))
        self.fingerprint = tokenizer_fingerprint(self.tokenizer)
        table = pq.read_table(sorted((samples / "samples").glob("part-*.parquet")), columns=["token_id", "vector"])
        ids = table.column("token_id").to_numpy()
        flat = np.asarray(table.column("vector").combine_chunks().flatten()).reshape(len(ids), self.dim)
        bounds = np.flatnonzero(np.diff(ids)) + 1
        self.vectors: dict[int, np.ndarray] = {int(v[0]): v_rows for v, v_rows in
                                               zip(np.split(ids, bounds), np.split(flat, bounds), strict=True)}


def write_other_artifact(out: Path) -> Path:
    """A finished artifact of another kind (teacher-embeddings), for the wrong-input error."""
    from distil_jobs.artifacts import open_location
    from distil_jobs.artifacts.manifest import new_manifest
    from distil_jobs.artifacts.run import finish

    out.mkdir(parents=True, exist_ok=True)
    local = out.parent / "rows.parquet"
    pq.write_table(pa.table({"row_idx": pa.array([0], pa.int64())}), local)
    finish(open_location(str(out)), new_manifest("teacher-embeddings", "precompute-embeddings", {}, [], 1),
           files=[(str(local), "data/part-0000000000-0000000001.parquet")])
    return out
