"""Sense labels: for every token of a text, which of its senses the teacher means there.

The label of token j is the argmax over that token's senses (rows offsets[t]:offsets[t+1] of the
dictionary's centroids) of the dot product with the teacher's vector at j, as in Wang et al.
(ACL Findings 2025); -1 where the dictionary has no senses for the token. Stored once by
`precompute-embeddings --output-type sense_ids`, the labels let a student train without the
teacher in memory. The teacher must tokenize exactly as the one the dictionary was gathered with
(`tokenizer_fingerprint`), and its vectors come from the dictionary's layer.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from distil_jobs.artifacts import require_artifact
from distil_jobs.artifacts.verify import entries, read_verified
from distil_jobs.errors import DistilError

log = logging.getLogger("distil_jobs.senses.labels")
DICTIONARY = "sense_dict.safetensors"  # what the cluster job writes, read here
TOKENS_COLUMN = "sense_token_ids"
LABELS_COLUMN = "sense_ids"
NO_SENSE = -1


class SenseDictionary:
    """A cluster job's artifact, read and checked against its manifest."""

    def __init__(self, uri: str) -> None:
        from safetensors.numpy import load

        from distil_jobs.jobs import SENSE_DICT

        loc, manifest = require_artifact(uri, SENSE_DICT)
        arrays = load(read_verified(loc, DICTIONARY, entries(manifest).get(DICTIONARY)))
        self.uri = uri
        self.extra: dict[str, Any] = manifest.get("extra") or {}
        self.centroids = arrays["centroids"].astype(np.float32)
        self.offsets = arrays["offsets"].astype(np.int64)

    def check_teacher(self, teacher: Any) -> None:
        """Refuse a teacher whose token ids or vectors mean something else than the dictionary's."""
        if self.extra.get("tokenizer_fingerprint") != teacher.fingerprint:
            raise DistilError(f"--sense-dict {self.uri} was made with a teacher of another vocabulary than "
                              f"{teacher.ref} (tokenizer_fingerprint differs): use the teacher it was gathered with "
                              f"({self.extra.get('teacher')})")
        if self.centroids.shape[1] != teacher.dim or len(self.offsets) != teacher.vocab_size + 1:
            raise DistilError(f"--sense-dict {self.uri} holds {self.centroids.shape[1]}-dim senses for "
                              f"{len(self.offsets) - 1} tokens, {teacher.ref} gives {teacher.dim} dims and "
                              f"{teacher.vocab_size} tokens: use the teacher it was gathered with")

    def labels(self, tokens: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """The sense index of each (token, vector), or NO_SENSE."""
        out = np.full(len(tokens), NO_SENSE, dtype=np.int16)
        for j, (t, h) in enumerate(zip(tokens, vectors, strict=True)):
            lo, hi = self.offsets[t], self.offsets[t + 1]
            if hi > lo:
                out[j] = int(np.argmax(self.centroids[lo:hi] @ h))
        return out


class SenseLabeler:
    """The teacher and the dictionary together: texts → per-token ids and sense labels (two list columns)."""

    def __init__(self, dictionary: str, teacher: str, device: str, max_length: int | None,
                 trust_remote_code: bool = False) -> None:
        from distil_jobs.senses.teacher import TokenTeacher

        self.dictionary = SenseDictionary(dictionary)
        self.teacher = TokenTeacher(teacher, device, max_length, trust_remote_code=trust_remote_code)
        self.dictionary.check_teacher(self.teacher)
        self.layer = self.teacher.layer_index(int(self.dictionary.extra.get("layer", -1)))
        self.path, self.attention = self.teacher.path, self.teacher.attention

    def columns(self, texts: list[str], batch_size: int) -> dict[str, pa.Array]:
        tokens: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for b in range(0, len(texts), batch_size):
            batch = texts[b:b + batch_size]
            ids, keep, hidden = self.teacher.encode(batch, [""] * len(batch), self.layer)
            for r in range(len(batch)):
                row_tokens = ids[r][keep[r]].astype(np.int32)
                tokens.append(row_tokens)
                labels.append(self.dictionary.labels(row_tokens, hidden[r][keep[r]].astype(np.float32)))
        return {TOKENS_COLUMN: pa.array([t.tolist() for t in tokens], pa.list_(pa.int32())),
                LABELS_COLUMN: pa.array([s.tolist() for s in labels], pa.list_(pa.int16()))}
