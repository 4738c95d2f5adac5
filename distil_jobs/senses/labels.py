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
from distil_jobs.artifacts.manifest import input_ref
from distil_jobs.artifacts.verify import entries, read_verified
from distil_jobs.errors import DistilError

log = logging.getLogger("distil_jobs.senses.labels")
DICTIONARY = "sense_dict.safetensors"  # what the cluster job writes, read here
TOKENS_COLUMN = "sense_token_ids"
LABELS_COLUMN = "sense_ids"
NO_SENSE = -1
_SCORED_AT_ONCE = 4096  # tokens per scoring call


class SenseDictionary:
    """A cluster job's artifact, read and checked against its manifest."""

    def __init__(self, uri: str) -> None:
        from safetensors.numpy import load

        from distil_jobs.jobs import SENSE_DICT

        loc, manifest = require_artifact(uri, SENSE_DICT)
        arrays = load(read_verified(loc, DICTIONARY, entries(manifest).get(DICTIONARY)))
        self.uri = uri
        self.ref = input_ref(uri, "sense_dict")  # with the manifest's hash: what labels made from it record
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
        """The sense index of each (token, vector), or NO_SENSE: the scoring training uses (sense_logits)."""
        import torch

        from distil_jobs.senses.replace import sense_logits

        centroids, offsets = torch.from_numpy(self.centroids), torch.from_numpy(self.offsets)
        out = np.full(len(tokens), NO_SENSE, dtype=np.int16)
        for lo in range(0, len(tokens), _SCORED_AT_ONCE):  # bounds the [tokens, senses, dim] gather
            hi = lo + _SCORED_AT_ONCE
            logits, counts = sense_logits(centroids, offsets, torch.from_numpy(np.asarray(tokens[lo:hi], np.int64)),
                                          torch.from_numpy(np.asarray(vectors[lo:hi], np.float32)))
            out[lo:hi] = torch.where(counts > 0, logits.argmax(-1), NO_SENSE).numpy()
        return out


class SenseLabeler:
    """The teacher and the dictionary together: texts → per-token ids and sense labels."""

    def __init__(self, dictionary: SenseDictionary, teacher: str, device: str, max_length: int | None,
                 trust_remote_code: bool = False) -> None:
        from distil_jobs.senses.teacher import TokenTeacher

        self.dictionary = dictionary
        self.teacher = TokenTeacher(teacher, device, max_length, trust_remote_code=trust_remote_code)
        self.dictionary.check_teacher(self.teacher)
        self.layer = self.teacher.layer_index(int(self.dictionary.extra.get("layer", -1)))
        self.path, self.attention = self.teacher.path, self.teacher.attention

    def label(self, texts: list[str], batch_size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Each text's token ids (special tokens left out) and the teacher's sense of each."""
        tokens: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for b in range(0, len(texts), batch_size):
            batch = texts[b:b + batch_size]
            ids, keep, hidden = self.teacher.encode(batch, [""] * len(batch), self.layer)
            # One scoring call for the whole batch, split back into rows.
            flat = self.dictionary.labels(ids[keep], hidden[keep].astype(np.float32))
            bounds = np.cumsum(keep.sum(1))[:-1]
            tokens += [row.astype(np.int32) for row in np.split(ids[keep], bounds)]
            labels += np.split(flat, bounds)
        return tokens, labels

    def columns(self, texts: list[str], batch_size: int) -> dict[str, pa.Array]:
        tokens, labels = self.label(texts, batch_size)
        return {TOKENS_COLUMN: pa.array([t.tolist() for t in tokens], pa.list_(pa.int32())),
                LABELS_COLUMN: pa.array([s.tolist() for s in labels], pa.list_(pa.int16()))}
