"""Embedding distillation losses. Every function returns a scalar mean over the batch.

`kld` treats each embedding as logits over its dimensions: KL(softmax(t/T) || softmax(s/T)) · T²,
the usual Hinton scaling, so gradients keep their size as the temperature changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from distil_jobs.errors import DistilError

LOSSES = ("mse", "cosine", "kld", "mse+kld")


def mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher)


def cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def kld(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    t = temperature
    log_p_student = F.log_softmax(student / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)


def mse_kld(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0, alpha: float = 0.5) -> torch.Tensor:
    """alpha·KLD + (1 − alpha)·MSE (the seed's formula)."""
    return alpha * kld(student, teacher, temperature) + (1.0 - alpha) * mse(student, teacher)


def similarity(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Relational distillation: MSE between the student's and the teacher's in-batch cosine-similarity
    matrices (pairs of different rows). It teaches how sentences relate, which is what STS, retrieval
    and clustering read, whatever the two widths; with one row there is no pair and the loss is 0."""
    n = student.size(0)
    if n < 2:
        return student.sum() * 0.0
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    pairs = ~torch.eye(n, dtype=torch.bool, device=student.device)
    return F.mse_loss((s @ s.T)[pairs], (t @ t.T)[pairs])


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(name: str, temperature: float = 1.0, alpha: float = 0.5) -> LossFn:
    """The loss named by `--loss`, with its hyper-parameters bound."""
    if name == "mse":
        return mse
    if name == "cosine":
        return cosine
    if name == "kld":
        return lambda s, t: kld(s, t, temperature)
    if name == "mse+kld":
        return lambda s, t: mse_kld(s, t, temperature, alpha)
    raise DistilError(f"unknown loss '{name}': use one of {', '.join(LOSSES)}")


def parallel_loss(student_src: torch.Tensor, student_tgt: torch.Tensor, teacher_src: torch.Tensor,
                  base: LossFn, student_weight: float = 0.0) -> torch.Tensor:
    """Parallel-sentence distillation (Reimers & Gurevych 2020): both sides of a translation pair
    are pulled toward the teacher's embedding of the source, so the target language lands in the
    teacher's space; an optional term also pulls the two student embeddings together."""
    loss = base(student_src, teacher_src) + base(student_tgt, teacher_src)
    if student_weight:
        loss = loss + student_weight * mse(student_tgt, student_src)
    return loss


def in_batch_ranking(queries: torch.Tensor, keys: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """Symmetric in-batch ranking (InfoNCE, as in LaBSE-style and sentence-transformers'
    MultipleNegativesRankingLoss): row i of `queries` must find row i of `keys` among the batch,
    and the other way round. Cosine similarities divided by `temperature`; cross-entropy on the
    diagonal. With one row the only candidate is the right one: the loss is 0 with zero gradient."""
    sim = F.normalize(queries, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    labels = torch.arange(sim.size(0), device=sim.device)
    return 0.5 * (F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels))
