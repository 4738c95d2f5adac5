"""The standard SQuAD preprocessing: question + context pairs cut into features of at most
`max_length` tokens, overlapping by `doc_stride` tokens, with the offset mapping kept so that a
token span maps back to context characters. A feature whose window does not hold the whole gold
answer points its start and end at the CLS token (as BERT's SQuAD recipe does).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from distil_jobs.errors import DistilError
from distil_jobs.qa.squad import QaExamples


@dataclasses.dataclass(slots=True)
class QaFeatures:
    input_ids: list[np.ndarray]  # unpadded, per feature
    token_type_ids: list[np.ndarray] | None  # for models that take them (BERT), else None
    offsets: list[np.ndarray]  # (tokens, 2) character spans into the context; -1 outside the context
    example: np.ndarray  # each feature's example index
    start: np.ndarray  # gold start token (CLS when the answer is not in the window)
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, idx: np.ndarray) -> QaFeatures:
        pick = (lambda xs: [xs[i] for i in idx])  # noqa: E731
        return QaFeatures(pick(self.input_ids), pick(self.token_type_ids) if self.token_type_ids else None,
                          pick(self.offsets), self.example[idx], self.start[idx], self.end[idx])

    def lengths(self) -> np.ndarray:
        return np.asarray([len(x) for x in self.input_ids], dtype=np.int64)


def make_features(tokenizer: Any, examples: QaExamples, max_length: int, doc_stride: int) -> QaFeatures:
    if not getattr(tokenizer, "is_fast", False):
        raise DistilError(f"{tokenizer.name_or_path}: QA needs a fast tokenizer (for the offset mapping)")
    try:
        enc = tokenizer(examples.questions, examples.contexts, truncation="only_second", max_length=max_length,
                        stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    except Exception as e:  # the tokenizers library says "Truncation error: ..." for a too-long question
        raise DistilError(f"cannot cut questions and contexts into features of --max-length {max_length} with "
                          f"--doc-stride {doc_stride} ({str(e).splitlines()[0][:100]}): raise --max-length or lower "
                          "--doc-stride") from None
    example = np.asarray(enc["overflow_to_sample_mapping"], dtype=np.int64)
    cls = tokenizer.cls_token_id
    ids, offsets, starts, ends = [], [], [], []
    for f in range(len(enc["input_ids"])):
        seq = enc.sequence_ids(f)
        span = np.asarray(enc["offset_mapping"][f], dtype=np.int64)
        span[np.asarray([s != 1 for s in seq])] = -1  # only context tokens map to answer text
        tokens = np.asarray(enc["input_ids"][f], dtype=np.int64)
        ex = int(example[f])
        s = e = None  # inference: no gold answer
        if examples.answers[ex]:
            s, e = _gold_tokens(span, examples.starts[ex][0], examples.starts[ex][0] + len(examples.answers[ex][0]))
        cls_at = int(np.flatnonzero(tokens == cls)[0]) if cls is not None and (tokens == cls).any() else 0
        ids.append(tokens)
        offsets.append(span)
        starts.append(cls_at if s is None else s)
        ends.append(cls_at if e is None else e)
    types = ([np.asarray(t, dtype=np.int64) for t in enc["token_type_ids"]] if "token_type_ids" in enc else None)
    return QaFeatures(ids, types, offsets, example, np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64))


def _gold_tokens(span: np.ndarray, start_char: int, end_char: int) -> tuple[int | None, int | None]:
    """The first and last token of the answer, or (None, None) when the window does not hold all of it."""
    inside = np.flatnonzero(span[:, 0] >= 0)
    if not len(inside) or span[inside[0], 0] > start_char or span[inside[-1], 1] < end_char:
        return None, None
    first = inside[span[inside, 1] > start_char][0]  # the token whose span reaches past the answer's start
    last = inside[span[inside, 0] < end_char][-1]
    return int(first), int(last)


@dataclasses.dataclass(slots=True)
class QaBatch:
    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask (and token_type_ids): the model's kwargs
    start: torch.Tensor
    end: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.inputs["attention_mask"].bool()


def collate(features: QaFeatures, idx: np.ndarray | list[int], pad_id: int, device: torch.device) -> QaBatch:
    """A right-padded batch of the features at `idx`."""
    idx = list(idx)
    width = max(len(features.input_ids[i]) for i in idx)

    def pad(rows: list[np.ndarray], value: int) -> torch.Tensor:
        out = np.full((len(rows), width), value, dtype=np.int64)
        for r, row in enumerate(rows):
            out[r, :len(row)] = row
        return torch.from_numpy(out).to(device)

    ids = [features.input_ids[i] for i in idx]
    inputs = {"input_ids": pad(ids, pad_id), "attention_mask": pad([np.ones(len(x), np.int64) for x in ids], 0)}
    if features.token_type_ids is not None:
        inputs["token_type_ids"] = pad([features.token_type_ids[i] for i in idx], 0)
    return QaBatch(inputs, torch.from_numpy(features.start[idx]).to(device),
                   torch.from_numpy(features.end[idx]).to(device))


def pad_logits(rows: list[np.ndarray], width: int, device: torch.device) -> torch.Tensor:
    """Stored per-feature logits (real tokens only) as a batch, padding far below any real logit."""
    out = np.full((len(rows), width), -1e4, dtype=np.float32)
    for r, row in enumerate(rows):
        out[r, :len(row)] = row
    return torch.from_numpy(out).to(device)
