"""The teacher's output distribution stored as top-k, and the KL computed from it.

Per scored position the artifact keeps the K most likely token ids, their log-probabilities at
the distillation temperature T, and the log of the probability left to every other token. Those
K+1 numbers are a proper distribution (the tail lumped into one bucket), so the KL the student
minimises from them is a true KL: that of the bucketed distributions, which is a lower bound of
the full KL and equal to it when the tail is empty (T=2, K=64: tests/unit/test_mlm/losses.py
measures the gap). Ids are uint16 when the vocabulary fits, log-probabilities float16: 4+2 bytes
per kept token, against 2 × vocabulary bytes for the full fp16 logits.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch

TOPK_COLUMNS = ("topk_ids", "topk_logprobs", "rest_logmass")
_TINY = 1e-12


def id_dtype(vocab: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab <= 65536 else np.dtype(np.int32)


def bytes_per_position(k: int, vocab: int) -> int:
    return k * (id_dtype(vocab).itemsize + 2) + 4


def topk_of(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids [n, k], log-probabilities at T [n, k], log of the rest's mass [n]) of teacher logits [n, V]."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    top, ids = logp.topk(min(k, logp.shape[-1]), dim=-1)
    rest = torch.log((1.0 - top.exp().sum(-1)).clamp_min(_TINY))
    return ids, top, rest


def bucket_logprobs(logp: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """The K+1 log-probabilities, renormalised (float16 storage leaves them summing to 1 ± 1e-3)."""
    full = torch.cat([logp.float(), rest.float().unsqueeze(-1)], dim=-1)
    return full - torch.logsumexp(full, dim=-1, keepdim=True)


def student_buckets(s_logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """The student's log-probabilities of the same K tokens and of all the others together."""
    logq = torch.log_softmax(s_logits.float() / temperature, dim=-1)
    top = logq.gather(-1, ids.long())
    # Floored like the teacher's: when K covers the vocabulary both rests are "nothing", not -inf.
    rest = torch.logsumexp(logq.scatter(-1, ids.long(), -math.inf), dim=-1).clamp_min(math.log(_TINY))
    return torch.cat([top, rest.unsqueeze(-1)], dim=-1)


def topk_kl(s_logits: torch.Tensor, ids: torch.Tensor, logp: torch.Tensor, rest: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """T² · mean over positions of KL(teacher buckets ‖ student buckets)."""
    t = bucket_logprobs(logp, rest)
    s = student_buckets(s_logits, ids, temperature)
    kl = (t.exp() * (t - s)).sum(-1)
    return kl.mean() * temperature**2


def topk_columns(ids: torch.Tensor, logp: torch.Tensor, rest: torch.Tensor, counts: list[int],
                     vocab: int) -> dict[str, pa.Array]:
    """Per-row list columns of the top-k of each row's `counts[r]` positions, in compact dtypes."""
    k = ids.shape[-1]
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    flat_ids = pa.FixedSizeListArray.from_arrays(pa.array(ids.cpu().numpy().astype(id_dtype(vocab)).reshape(-1)), k)
    flat_lp = pa.FixedSizeListArray.from_arrays(pa.array(logp.cpu().numpy().astype(np.float16).reshape(-1)), k)
    flat_rest = pa.array(rest.cpu().numpy().astype(np.float32))
    return {"topk_ids": pa.ListArray.from_arrays(offsets, flat_ids),
            "topk_logprobs": pa.ListArray.from_arrays(offsets, flat_lp),
            "rest_logmass": pa.ListArray.from_arrays(offsets, flat_rest)}
