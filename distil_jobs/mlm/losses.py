"""DistilBERT's loss terms (Sanh et al. 2019), each on the positions it is defined over.

  α_ce·T²·KL(softmax(t/T) ‖ softmax(s/T))   the teacher's distribution (exact, or from stored top-k)
+ α_mlm·CE(s, masked labels)                 the data (α_clm: the next token, for causal LMs)
+ α_cos·(1 − cos(h_s, h_t))                  last hidden states, at the real tokens
+ α_mse·‖s − t‖² / positions                 raw logits
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True, slots=True)
class LossWeights:
    temperature: float = 2.0
    ce: float = 5.0
    mlm: float = 2.0  # α_mlm, or α_clm for a causal LM
    cos: float = 1.0
    mse: float = 0.0


def exact_kl(s_logits: torch.Tensor, t_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · mean over positions of KL(softmax(t/T) ‖ softmax(s/T)) (KLDivLoss 'batchmean' per position)."""
    t = torch.log_softmax(t_logits.float() / temperature, dim=-1)
    s = torch.log_softmax(s_logits.float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(-1).mean() * temperature**2


def hidden_cosine(s_hidden: torch.Tensor, t_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """1 − cosine of the last hidden states, averaged over the real (attended) tokens."""
    keep = attention_mask.bool()
    return (1.0 - F.cosine_similarity(s_hidden[keep].float(), t_hidden[keep].float(), dim=-1)).mean()


def logit_mse(s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
    """Summed squared logit error per position (DistilBERT's MSELoss(sum) / positions)."""
    return F.mse_loss(s_logits.float(), t_logits.float(), reduction="sum") / max(s_logits.shape[0], 1)


def label_ce(s_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(s_logits.float(), labels.long())
