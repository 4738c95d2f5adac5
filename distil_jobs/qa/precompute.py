"""precompute-embeddings --output-type qa_logits: a QA teacher's start/end logits for every feature of
SQuAD-format rows, so that train-student --method qa needs no teacher at training time.

The features are the student's (qa/features.py with this tokenizer, --max-length and
--doc-stride), so the manifest records all three; train-student refuses an artifact whose
features it would cut otherwise (qa/stored.py).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from distil_jobs.qa.features import make_features
from distil_jobs.qa.models import feature_logits, load_qa
from distil_jobs.qa.squad import examples_of
from distil_jobs.qa.stored import logit_columns
from distil_jobs.senses.vocab import tokenizer_fingerprint

DEFAULT_MAX_LENGTH = 384  # the SQuAD recipes' window


class QaLogitsTeacher:
    def __init__(self, cfg: Any) -> None:
        from distil_jobs.models.encoder import pick_attention, pick_device
        from distil_jobs.models.registry import resolve_model
        from distil_jobs.train.methods.mlm import model_identity

        self.device = pick_device(cfg.device)
        model, self.tokenizer = load_qa(cfg.teacher, "teacher", pick_attention(self.device))
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.attention = getattr(model.config, "_attn_implementation", None)
        self.path = resolve_model(cfg.teacher)
        self.max_length, self.doc_stride, self.uri = cfg.max_length or DEFAULT_MAX_LENGTH, cfg.doc_stride, cfg.input
        self.facts = {"max_length": self.max_length, "doc_stride": self.doc_stride,
                      "tokenizer_fingerprint": tokenizer_fingerprint(self.tokenizer),
                      "teacher_identity": model_identity(cfg.teacher)}

    def columns(self, part: pa.Table, batch_size: int) -> dict[str, pa.Array]:
        examples = examples_of(part, self.uri)
        features = make_features(self.tokenizer, examples, self.max_length, self.doc_stride)
        starts, ends = feature_logits(self.model, features, int(self.tokenizer.pad_token_id or 0), batch_size,
                                      self.device)
        return logit_columns(features, len(examples), starts, ends)
