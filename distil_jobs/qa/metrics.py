"""SQuAD v1.1 exact match and F1, with the official answer normalisation.

Written out rather than taken from `evaluate`: `evaluate.load("squad")` fetches the metric's code
from the Hub at run time, which an offline cluster node cannot. The logic follows the official
evaluate-v1.1.py script: lower case, drop punctuation and the articles a/an/the, collapse
whitespace; a prediction scores its best match over the gold answers.
"""

from __future__ import annotations

import collections
import re
import string

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], golds: list[list[str]]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent, each prediction against the best of its gold answers."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = sum(max(exact_match(p, g) for g in gs) for p, gs in zip(predictions, golds, strict=True))
    f = sum(max(f1(p, g) for g in gs) for p, gs in zip(predictions, golds, strict=True))
    return {"exact_match": 100.0 * em / len(predictions), "f1": 100.0 * f / len(predictions)}
