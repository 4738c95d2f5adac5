"""Batches for LM distillation: texts tokenized and masked, or rows of a stored top-k artifact.

A batch says where logits are needed (`rows`, `positions`): every real token for the full KL,
only the masked ones with --restrict-ce-to-mask or a stored artifact, every token but the last
for a causal LM. `scored` picks, among those, the positions with a label (masked, or next token).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from distil_jobs.mlm.masking import Masker


@dataclasses.dataclass(slots=True)
class LmBatch:
    input_ids: torch.Tensor  # [rows, length]
    attention_mask: torch.Tensor
    rows: torch.Tensor  # where logits are needed: (row, position) pairs
    positions: torch.Tensor
    scored: torch.Tensor  # indices into those pairs of the positions with a label
    labels: torch.Tensor  # the label of each scored position
    topk: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # stored teacher at the pairs


@dataclasses.dataclass(slots=True)
class StoredRows:
    """The rows of an mlm_topk artifact: the masked input the teacher saw and its top-k per masked position."""

    input_ids: list[np.ndarray]
    positions: list[np.ndarray]
    labels: list[np.ndarray]
    topk_ids: list[np.ndarray]  # [positions, K] per row
    topk_logprobs: list[np.ndarray]
    rest_logmass: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, idx: np.ndarray) -> StoredRows:
        return StoredRows(*([getattr(self, f.name)[i] for i in idx] for f in dataclasses.fields(self)))


class Batcher:
    def __init__(self, tokenizer: Any, masker: Masker | None, max_length: int, *, causal: bool, restrict: bool,
                 device: torch.device) -> None:
        self.tokenizer, self.masker, self.max_length = tokenizer, masker, max_length
        self.causal, self.restrict, self.device = causal, restrict, device
        pad = tokenizer.pad_token_id
        self.pad = int(pad if pad is not None else (tokenizer.eos_token_id or 0))

    def tokenize(self, texts: list[str]) -> list[np.ndarray]:
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, add_special_tokens=True)
        return [np.asarray(ids, dtype=np.int64) for ids in enc["input_ids"]]

    def from_texts(self, texts: list[str], row_ids: list[int]) -> LmBatch:
        """Each text masked by its input row number (the same masks as a stored artifact), or, for a
        causal LM, left as it is with each next token as label."""
        inputs, wheres, scored_of, labels = [], [], [], []
        for ids, row in zip(self.tokenize(texts), row_ids, strict=True):
            if self.causal:
                where = np.arange(max(len(ids) - 1, 0))
                inputs.append(ids)
                wheres.append(where)
                scored_of.append(np.arange(len(where)))
                labels.append(ids[1:])
                continue
            assert self.masker is not None
            m = self.masker.mask(ids, row)
            where = m.positions if self.restrict else np.arange(len(ids))
            inputs.append(m.input_ids)
            wheres.append(where)
            scored_of.append(np.searchsorted(where, m.positions))
            labels.append(m.labels)
        return self._batch(inputs, wheres, scored_of, labels)

    def from_stored(self, rows: StoredRows) -> LmBatch:
        batch = self._batch(rows.input_ids, rows.positions, [np.arange(len(p)) for p in rows.positions], rows.labels)
        batch.topk = (self._cat(rows.topk_ids, np.int64), self._cat(rows.topk_logprobs, np.float32),
                      self._cat(rows.rest_logmass, np.float32))
        return batch

    def _cat(self, parts: list[np.ndarray], dtype: Any) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(parts).astype(dtype)).to(self.device)

    def _batch(self, inputs: list[np.ndarray], wheres: list[np.ndarray], scored_of: list[np.ndarray],
               labels: list[np.ndarray]) -> LmBatch:
        length = max(len(x) for x in inputs)
        ids = np.full((len(inputs), length), self.pad, dtype=np.int64)
        mask = np.zeros((len(inputs), length), dtype=np.int64)
        for r, x in enumerate(inputs):
            ids[r, :len(x)], mask[r, :len(x)] = x, 1
        rows = np.concatenate([np.full(len(w), r) for r, w in enumerate(wheres)]).astype(np.int64)
        offsets = np.cumsum([0] + [len(w) for w in wheres])[:-1]
        scored = np.concatenate([s + o for s, o in zip(scored_of, offsets, strict=True)]).astype(np.int64)

        def tensor(x: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x, dtype=np.int64), device=self.device)

        return LmBatch(tensor(ids), tensor(mask), tensor(rows), tensor(np.concatenate(wheres)), tensor(scored),
                       tensor(np.concatenate(labels)))
