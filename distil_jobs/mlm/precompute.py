"""precompute-embeddings --output-type mlm_topk: a masked-LM teacher's top-k log-probabilities at
the masked positions of each text, so that train-student --method mlm needs no teacher.

Each row keeps the masked input the teacher saw (`input_ids`), the masked `positions`, their
`labels`, and per position the top-k ids, log-probabilities at the distillation temperature and
the log of the rest's mass (mlm/topk.py). The manifest records what a reader must match: the
masking, the temperature, the vocabulary and the teacher.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch

from distil_jobs.mlm.batches import Batcher
from distil_jobs.mlm.models import LmWithHead, load_lm
from distil_jobs.mlm.topk import bytes_per_position, topk_columns, topk_of
from distil_jobs.senses.vocab import tokenizer_fingerprint, vocab_size

DEFAULT_MAX_LENGTH = 128


def _list(values: list[np.ndarray], dtype: Any) -> pa.Array:
    return pa.array([v.astype(dtype) for v in values], pa.list_(pa.from_numpy_dtype(np.dtype(dtype))))


class TopKTeacher:
    def __init__(self, cfg: Any, texts: list[str]) -> None:
        from distil_jobs.models.encoder import pick_attention, pick_device
        from distil_jobs.models.registry import resolve_model
        from distil_jobs.train.methods.mlm import make_masker, model_identity

        self.device = pick_device(cfg.device)
        lm, tokenizer = load_lm(cfg.teacher, "teacher", causal=False, attention=pick_attention(self.device))
        self.module = LmWithHead(lm.eval().requires_grad_(False)).to(self.device)
        self.attention = getattr(lm.config, "_attn_implementation", None)
        self.path = resolve_model(cfg.teacher)
        masker = make_masker(cfg, tokenizer, texts, f"teacher {cfg.teacher}")
        self.max_length = cfg.max_length or DEFAULT_MAX_LENGTH
        self.batcher = Batcher(tokenizer, masker, self.max_length, causal=False, restrict=True, device=self.device)
        self.k, self.temperature, self.vocab = cfg.topk, cfg.kd_temperature, vocab_size(tokenizer)
        self.facts = {"masking": masker.describe(), "kd_temperature": cfg.kd_temperature, "topk": cfg.topk,
                      "max_length": self.max_length, "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
                      "teacher_identity": model_identity(cfg.teacher),
                      "stored_bytes_per_position": bytes_per_position(cfg.topk, self.vocab),
                      "full_logits_bytes_per_position": 2 * self.vocab}

    @torch.no_grad()
    def columns(self, texts: list[str], batch_size: int, row_ids: list[int]) -> dict[str, pa.Array]:
        parts: dict[str, list[pa.Array]] = {}
        for b in range(0, len(texts), batch_size):
            batch = self.batcher.from_texts(texts[b:b + batch_size], row_ids[b:b + batch_size])
            logits, _ = self.module(batch.input_ids, batch.attention_mask, batch.rows, batch.positions)
            ids, logp, rest = topk_of(logits, self.k, self.temperature)
            n_rows = batch.input_ids.shape[0]
            rows = batch.rows.cpu().numpy()
            counts = np.bincount(rows, minlength=n_rows).tolist()
            lengths = batch.attention_mask.sum(1).cpu().numpy()
            ids_np, pos_np = batch.input_ids.cpu().numpy(), batch.positions.cpu().numpy()
            split = np.cumsum(counts)[:-1]
            cols = {"input_ids": _list([ids_np[r, :lengths[r]] for r in range(n_rows)], np.int32),
                    "positions": _list(np.split(pos_np, split), np.int16 if self.max_length < 32768 else np.int32),
                    "labels": _list(np.split(batch.labels.cpu().numpy(), split), np.int32),
                    **topk_columns(ids, logp, rest, counts, self.vocab)}
            for name, col in cols.items():
                parts.setdefault(name, []).append(col)
        return {name: pa.concat_arrays(cols) for name, cols in parts.items()}
