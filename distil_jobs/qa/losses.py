"""The QA distillation loss (DistilBERT's SQuAD recipe):
α_ce·T²·½(KL_start + KL_end) + α_qa·½(CE_start + CE_end).

The KL is between the teacher's and the student's start (and end) distributions over the tokens
of a feature at temperature T; T² keeps its gradients on the scale of the CE as T changes
(Hinton et al.). Padding is masked out of both distributions, so a feature's padding (which
differs between a padded batch and stored logits) never counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_FAR_BELOW = -1e4  # a logit whose probability is exactly 0 after softmax, finite in bf16 too


def masked(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.float().masked_fill(~mask, _FAR_BELOW)


def span_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """T²·KL(teacher ‖ student) per feature, averaged over features; logits (features, tokens)."""
    s = F.log_softmax(masked(student, mask) / temperature, dim=-1)
    t = F.log_softmax(masked(teacher, mask) / temperature, dim=-1)
    return (temperature ** 2) * F.kl_div(s, t, log_target=True, reduction="batchmean")


def span_ce(student: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(masked(student, mask), gold)


def qa_kd_loss(s_start: torch.Tensor, s_end: torch.Tensor, t_start: torch.Tensor | None, t_end: torch.Tensor | None,
               gold_start: torch.Tensor, gold_end: torch.Tensor, mask: torch.Tensor, temperature: float,
               alpha_ce: float, alpha_qa: float) -> torch.Tensor:
    total = s_start.float().sum() * 0.0
    if alpha_ce and t_start is not None and t_end is not None:
        kl = 0.5 * (span_kl(s_start, t_start, mask, temperature) + span_kl(s_end, t_end, mask, temperature))
        total = total + alpha_ce * kl
    if alpha_qa:
        total = total + alpha_qa * 0.5 * (span_ce(s_start, gold_start, mask) + span_ce(s_end, gold_end, mask))
    return total
