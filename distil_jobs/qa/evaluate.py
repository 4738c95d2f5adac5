"""Held-out QA metrics from per-feature logits: SQuAD EM/F1 of the decoded answers, the gold-span
cross-entropy, and (with the teacher's logits) the distillation KL at temperature T."""

from __future__ import annotations

import numpy as np
import torch

from distil_jobs.qa.features import QaFeatures, pad_logits
from distil_jobs.qa.losses import span_ce, span_kl
from distil_jobs.qa.metrics import squad_scores
from distil_jobs.qa.postprocess import best_answers
from distil_jobs.qa.squad import QaExamples

Logits = tuple[list[np.ndarray], list[np.ndarray]]


def answer_scores(examples: QaExamples, features: QaFeatures, logits: Logits, n_best: int,
                  max_answer_length: int) -> dict[str, float]:
    answers = best_answers(examples, features, *logits, n_best=n_best, max_answer_length=max_answer_length)
    scores = squad_scores(answers, examples.answers)
    return {"dev_exact_match": scores["exact_match"], "dev_f1": scores["f1"]}


def dev_losses(features: QaFeatures, student: Logits, teacher: Logits | None, temperature: float,
               batch: int = 256) -> dict[str, float]:
    """Mean gold-span CE and (with `teacher`) T²·KL over the features, both averaged over start and end."""
    ce = kl = 0.0
    device = torch.device("cpu")
    for b in range(0, len(features), batch):
        idx = np.arange(b, min(b + batch, len(features)))
        width = max(len(features.input_ids[i]) for i in idx)
        mask = torch.arange(width)[None, :] < torch.as_tensor([len(features.input_ids[i]) for i in idx])[:, None]
        for side, gold in ((0, features.start), (1, features.end)):
            s = pad_logits([student[side][i] for i in idx], width, device)
            ce += 0.5 * float(span_ce(s, torch.from_numpy(gold[idx]), mask)) * len(idx)
            if teacher is not None:
                t = pad_logits([teacher[side][i] for i in idx], width, device)
                kl += 0.5 * float(span_kl(s, t, mask, temperature)) * len(idx)
    n = max(len(features), 1)
    out = {"dev_qa_loss": ce / n}
    if teacher is not None:
        out["dev_kl"] = kl / n
    return out
