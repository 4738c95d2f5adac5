"""Loading extractive-QA models (AutoModelForQuestionAnswering) and running them on feature batches.

A sentence-transformers package ships an encoder without a QA head: `from_pretrained` would then
initialise `qa_outputs` at random and say so only in `missing_keys`. Such a teacher would teach
noise, so it is refused, pointing to `prepare-teacher --task qa`, which fits one.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from distil_jobs.errors import DistilError
from distil_jobs.mlm.models import head_keys
from distil_jobs.models.loading import with_attention_fallback
from distil_jobs.models.registry import resolve_model
from distil_jobs.qa.features import QaFeatures, collate


def load_qa_tokenizer(ref: str, what: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(ref))
    if not getattr(tokenizer, "is_fast", False):
        raise DistilError(f"{what} {ref} has no fast tokenizer: QA maps answers through the offset mapping, which "
                          "only fast tokenizers give")
    return tokenizer


def load_qa(ref: str, what: str, attention: str = "sdpa", *, head: str = "trained") -> tuple[Any, Any]:
    """(model, tokenizer). `head`: "trained" refuses a missing QA head; "new" accepts it (prepare-teacher,
    or a student that learns its head)."""
    from transformers import AutoModelForQuestionAnswering

    tokenizer = load_qa_tokenizer(ref, what)
    path = resolve_model(ref)
    try:
        (model, info), _ = with_attention_fallback(
            lambda attn: AutoModelForQuestionAnswering.from_pretrained(path, attn_implementation=attn,
                                                                       output_loading_info=True), attention)
    except ValueError as e:  # an architecture with no QA head class
        raise DistilError(f"{what} {ref} cannot be loaded for question answering ({str(e).splitlines()[0][:120]}): "
                          "pass an encoder such as minilm or mpnet") from None
    missing = head_keys(info.get("missing_keys", []), model)
    if missing and head == "trained":
        raise DistilError(f"{what} {ref} has no trained QA head ({missing[0]} would be random): fit one with "
                          f"distil-jobs prepare-teacher --task qa --model {ref} --input SQUAD --output DIR, and use DIR")
    return model, tokenizer


def forward(model: nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(**inputs)
    return out.start_logits, out.end_logits


@torch.no_grad()
def feature_logits(model: nn.Module, features: QaFeatures, pad_id: int, batch_size: int, device: torch.device,
                   autocast: Any = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits of every feature, real tokens only (fp32 numpy), in feature order."""
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    order = np.argsort(features.lengths(), kind="stable")  # similar lengths together: less padding
    by_feature: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        batch = collate(features, idx, pad_id, device)
        with autocast() if autocast else contextlib.nullcontext():
            s, e = forward(model, batch.inputs)
        s, e = s.float().cpu().numpy(), e.float().cpu().numpy()
        for r, f in enumerate(idx):
            n = len(features.input_ids[f])
            by_feature[int(f)] = (s[r, :n], e[r, :n])
    for f in range(len(features)):
        starts.append(by_feature[f][0])
        ends.append(by_feature[f][1])
    return starts, ends

