"""From start/end logits to answer texts: the standard n-best search over each example's features.

For every feature, the `n_best` highest start and end logits are paired; a pair counts when both
tokens are in the context, the end is not before the start and the span is at most
`max_answer_length` tokens. The best pair over all of an example's features (by start + end
logit) is its answer, cut from the context by the offset mapping.
"""

from __future__ import annotations

import numpy as np

from distil_jobs.qa.features import QaFeatures
from distil_jobs.qa.squad import QaExamples


def best_answers(examples: QaExamples, features: QaFeatures, start_logits: list[np.ndarray],
                 end_logits: list[np.ndarray], n_best: int = 20, max_answer_length: int = 30) -> list[str]:
    best: list[tuple[float, str]] = [(-np.inf, "")] * len(examples)
    for f in range(len(features)):
        ex, span = int(features.example[f]), features.offsets[f]
        s_log, e_log = start_logits[f][:len(span)], end_logits[f][:len(span)]
        for s in np.argsort(s_log)[::-1][:n_best]:
            if span[s, 0] < 0:
                continue
            for e in np.argsort(e_log)[::-1][:n_best]:
                if span[e, 0] < 0 or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(s_log[s] + e_log[e])
                if score > best[ex][0]:
                    best[ex] = (score, examples.contexts[ex][span[s, 0]:span[e, 1]])
    return [text for _, text in best]
