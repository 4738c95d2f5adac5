"""DistilBERT's masking: 15 % of each text's tokens, rare tokens picked more often, 80/10/10.

Which positions are predicted is drawn with weights counts^-0.7 (Sanh et al. 2019): frequent
tokens ("the", ",") are picked less, so the student spends its signal on words that carry meaning.
Special tokens are never picked. Of the picked positions 80 % become the mask token, 10 % keep
their token and 10 % get a random one.

The draw is a pure function of (seed, input row number): precompute-embeddings' stored top-k
logits and train-student's online teacher mask a row the same way, whatever the sharding,
batching, rank or resume. `Masking.describe()` is what manifests record, so a reader can refuse
an artifact masked otherwise. Held-out text is masked uniformly (`uniform`), as BERT does.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from typing import Any

import numpy as np

MASK, KEEP, RANDOM = 0.8, 0.1, 0.1  # what becomes of a picked position


def counts_sha256(counts: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(counts, dtype="<i8").tobytes()).hexdigest()


@dataclasses.dataclass(slots=True)
class MaskedRow:
    input_ids: np.ndarray  # the text's ids after masking
    positions: np.ndarray  # the picked positions, ascending
    labels: np.ndarray  # the original ids there


class Masker:
    def __init__(self, counts: np.ndarray, excluded: list[int], mask_id: int, seed: int,
                 probability: float = 0.15, smoothing: float = 0.7) -> None:
        self.seed, self.probability, self.smoothing, self.mask_id = seed, probability, smoothing, mask_id
        self.counts_sha256 = counts_sha256(counts)
        weights = np.maximum(counts.astype(np.float64), 1.0) ** -smoothing
        weights[np.asarray(excluded, dtype=np.int64)] = 0.0
        self.weights = weights
        self.random_ids = np.flatnonzero(weights > 0)  # a random replacement is never a special token

    def uniform(self) -> Masker:
        """The same masker with every non-special token equally likely (BERT's masking): held-out
        masked-token accuracy is measured with it, so it scores the text, not the rare words alone
        (smoothed masks give a token unseen in the counts the highest weight)."""
        other = copy.copy(self)
        other.weights = (self.weights > 0).astype(np.float64)
        other.smoothing = 0.0
        return other

    def describe(self) -> dict[str, Any]:
        """What decides every mask: two runs with equal descriptions mask every row alike."""
        return {"seed": self.seed, "probability": self.probability, "smoothing": self.smoothing,
                "split": [MASK, KEEP, RANDOM], "counts_sha256": self.counts_sha256}

    def mask(self, ids: np.ndarray, row: int) -> MaskedRow:
        rng = np.random.default_rng([self.seed, row])
        w = self.weights[ids]
        candidates = int(np.count_nonzero(w))
        # Stochastic rounding: the expected count is exactly probability × tokens, even for short texts.
        n = min(candidates, int(np.floor(self.probability * candidates + rng.random())))
        if n == 0:
            return MaskedRow(ids.copy(), np.zeros(0, np.int64), np.zeros(0, ids.dtype))
        positions = np.sort(rng.choice(len(ids), size=n, replace=False, p=w / w.sum()))
        out = ids.copy()
        action = rng.random(n)
        masked = action < MASK
        random = action >= MASK + KEEP
        out[positions[masked]] = self.mask_id
        out[positions[random]] = self.random_ids[rng.integers(0, len(self.random_ids), int(random.sum()))]
        return MaskedRow(out, positions, ids[positions])
