"""Teacher start/end logits stored per example (precompute-embeddings --output-type qa_logits).

A row keeps its question's features back to back: `qa_feature_tokens` holds each feature's token
count, `qa_start_logits` and `qa_end_logits` the concatenated logits of their real tokens (fp16).
Features are a function of the tokenizer, --max-length and --doc-stride; the manifest records all
three and a reader that cuts other features is refused before it trains (then, as a last check,
each example's feature count and lengths must match).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from distil_jobs.errors import DistilError
from distil_jobs.qa.features import QaFeatures

QA_LOGITS = "qa_logits"
COLUMNS = ("qa_feature_tokens", "qa_start_logits", "qa_end_logits")


def logit_columns(features: QaFeatures, n_examples: int, starts: list[np.ndarray], ends: list[np.ndarray]
                  ) -> dict[str, pa.Array]:
    per: list[list[int]] = [[] for _ in range(n_examples)]
    for f, ex in enumerate(features.example):
        per[int(ex)].append(f)

    def joined(values: list[np.ndarray]) -> pa.Array:
        return pa.array([np.concatenate([values[f] for f in fs]).astype(np.float16) if fs else
                         np.zeros(0, np.float16) for fs in per], pa.list_(pa.float16()))

    tokens = pa.array([[len(features.input_ids[f]) for f in fs] for fs in per], pa.list_(pa.int32()))
    return {COLUMNS[0]: tokens, COLUMNS[1]: joined(starts), COLUMNS[2]: joined(ends)}


def read_logits(table: pa.Table, features: QaFeatures, uri: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each feature's stored start and end logits; refuses rows cut into other features."""
    if any(c not in table.column_names for c in COLUMNS):
        raise DistilError(f"{uri} has no teacher QA logits: make them with precompute-embeddings --output-type "
                          "qa_logits")
    tokens = table.column(COLUMNS[0]).to_pylist()
    flat = [table.column(c).to_pylist() for c in COLUMNS[1:]]
    per: dict[int, list[int]] = {}
    for f, ex in enumerate(features.example):
        per.setdefault(int(ex), []).append(f)
    starts: list[Any] = [None] * len(features)
    ends: list[Any] = [None] * len(features)
    for ex, fs in per.items():
        want = [len(features.input_ids[f]) for f in fs]
        if tokens[ex] != want:
            raise DistilError(f"{uri} row {ex}: its teacher logits cover features of {tokens[ex]} tokens, this run "
                              f"cuts {want}: precompute with the student's tokenizer, --max-length and --doc-stride")
        cut = np.cumsum([0, *want])
        s, e = np.asarray(flat[0][ex], np.float32), np.asarray(flat[1][ex], np.float32)
        for i, f in enumerate(fs):
            starts[f], ends[f] = s[cut[i]:cut[i + 1]], e[cut[i]:cut[i + 1]]
    return starts, ends
