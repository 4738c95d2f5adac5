"""Held-out LM metrics: accuracy and perplexity at the scored positions, and the KL to the teacher."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from distil_jobs.mlm.batches import LmBatch
from distil_jobs.mlm.losses import exact_kl
from distil_jobs.mlm.topk import topk_kl

Forward = Callable[[LmBatch], tuple[torch.Tensor, torch.Tensor]]  # batch -> (logits at its pairs, hidden)


@torch.no_grad()
def lm_metrics(forward: Forward, batches: Iterable[LmBatch], accuracy_name: str, *, teacher: Forward | None = None,
               temperature: float = 1.0, autocast: Any = contextlib.nullcontext) -> dict[str, float]:
    """`accuracy_name` (argmax = label), perplexity (exp of the mean label cross-entropy) and, with a
    teacher (online, or the batches' stored top-k), the mean KL at temperature T over the logit pairs."""
    right = scored = pairs = 0
    ce = kl = 0.0
    with_kl = True
    for batch in batches:
        with autocast():
            logits, _ = forward(batch)
        logits = logits.float()
        if batch.scored.numel():
            picked = logits[batch.scored]
            right += int((picked.argmax(-1) == batch.labels).sum())
            ce += float(F.cross_entropy(picked, batch.labels, reduction="sum"))
            scored += int(batch.scored.numel())
        n = int(logits.shape[0])
        if batch.topk is not None:
            kl += float(topk_kl(logits, *batch.topk, temperature)) * n
        elif teacher is not None:
            with autocast():
                t_logits, _ = teacher(batch)
            kl += float(exact_kl(logits, t_logits, temperature)) * n
        else:
            with_kl = False
        pairs += n
    if not scored:
        return {}
    metrics = {accuracy_name: right / scored, "dev_perplexity": math.exp(min(ce / scored, 50.0))}
    if with_kl and pairs:
        metrics["dev_kl"] = kl / pairs
    return metrics
