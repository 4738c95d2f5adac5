"""Token counts over a corpus: the weights of DistilBERT's masking (masking.py).

Counted once per corpus by the `count-tokens` job and stored as an artifact (`data/token_counts.parquet`:
token_id, token, count), or, when a run gets no counts artifact, counted over its own input texts
at start (a few seconds with a fast tokenizer). Either way the counts' sha256 goes into the
manifest's masking description, so masks made from other counts are noticed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from distil_jobs.errors import DistilError
from distil_jobs.senses.vocab import tokenizer_fingerprint, vocab_size

TOKEN_COUNTS_FILE = "data/token_counts.parquet"


def count_tokens(tokenizer: Any, texts: list[str], batch: int = 1000) -> np.ndarray:
    """How often each token id occurs in `texts` (special tokens left out: they are never masked)."""
    counts = np.zeros(vocab_size(tokenizer), dtype=np.int64)
    for b in range(0, len(texts), batch):
        ids = tokenizer(texts[b:b + batch], add_special_tokens=False)["input_ids"]
        if ids:
            flat = np.fromiter((i for row in ids for i in row), dtype=np.int64)
            counts += np.bincount(flat, minlength=len(counts))[:len(counts)]
    return counts


def counts_table(tokenizer: Any, counts: np.ndarray) -> pa.Table:
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(counts))))
    return pa.table({"token_id": pa.array(np.arange(len(counts), dtype=np.int32)),
                     "token": pa.array([t if t is not None else "" for t in tokens], pa.string()),
                     "count": pa.array(counts)})


def read_counts(uri: str, tokenizer: Any, what: str) -> np.ndarray:
    """A count-tokens artifact's counts, refused unless they were counted with `tokenizer`'s vocabulary."""
    from distil_jobs.artifacts import require_artifact
    from distil_jobs.data import read_table
    from distil_jobs.jobs import TOKEN_COUNTS

    _, manifest = require_artifact(uri, TOKEN_COUNTS)
    extra = manifest.get("extra") or {}
    if extra.get("tokenizer_fingerprint") != tokenizer_fingerprint(tokenizer):
        raise DistilError(f"--token-counts {uri} was counted with the vocabulary of {extra.get('model')}, not that of "
                          f"{what}: count with the same tokenizer (distil-jobs count-tokens --model ...)")
    table = read_table(uri)  # verified against the manifest
    counts = np.zeros(vocab_size(tokenizer), dtype=np.int64)
    ids = table.column("token_id").to_numpy()
    if ids.size and (ids.min() < 0 or ids.max() >= len(counts)):
        raise DistilError(f"--token-counts {uri} holds token ids past the vocabulary of {what}: recount it")
    counts[ids] = table.column("count").to_numpy()
    return counts
