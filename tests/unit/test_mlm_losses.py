"""DistilBERT's loss terms, masking and top-k storage, checked against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distil_jobs.mlm.batches import Batcher
from distil_jobs.mlm.losses import exact_kl, hidden_cosine, label_ce, logit_mse
from distil_jobs.mlm.masking import Masker
from distil_jobs.mlm.topk import bucket_logprobs, topk_kl, topk_of


def _softmax(x: list[float]) -> list[float]:
    m = max(x)
    e = [math.exp(v - m) for v in x]
    return [v / sum(e) for v in e]


def test_loss_terms_match_a_hand_computation() -> None:
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    T = 2.0
    kl = 0.0
    for srow, trow in zip(s, t, strict=True):
        p, q = _softmax([v / T for v in trow]), _softmax([v / T for v in srow])
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert float(exact_kl(torch.tensor(s), torch.tensor(t), T)) == pytest.approx(kl / 2 * T * T, rel=1e-5)

    ce = -(math.log(_softmax(s[0])[1]) + math.log(_softmax(s[1])[2])) / 2
    assert float(label_ce(torch.tensor(s), torch.tensor([1, 2]))) == pytest.approx(ce, rel=1e-5)

    mse = sum((a - b) ** 2 for sr, tr in zip(s, t, strict=True) for a, b in zip(sr, tr, strict=True)) / 2
    assert float(logit_mse(torch.tensor(s), torch.tensor(t))) == pytest.approx(mse, rel=1e-6)

    hs = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    ht = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the padded third token does not count
    assert float(hidden_cosine(hs, ht, mask)) == pytest.approx(((1 - 0.0) + (1 - 1.0)) / 2, abs=1e-6)


def test_topk_kl_is_the_exact_kl_when_k_covers_the_vocabulary_and_a_lower_bound_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(16, 50, generator=g) * 3, torch.randn(16, 50, generator=g) * 3
    exact = float(exact_kl(s, t, 2.0))
    full = topk_of(t, 50, 2.0)
    assert float(topk_kl(s, *full, 2.0)) == pytest.approx(exact, rel=1e-4)
    part = topk_of(t, 8, 2.0)
    assert 0 < float(topk_kl(s, *part, 2.0)) <= exact + 1e-6
    # The K+1 buckets are a distribution, also after the float16 storage.
    _, logp, rest = part
    assert torch.allclose(bucket_logprobs(logp.half(), rest).exp().sum(-1), torch.ones(16), atol=1e-5)


def _masker(seed: int = 0) -> Masker:
    counts = np.arange(1000, dtype=np.int64)[::-1] * 10  # id 0 most frequent
    return Masker(counts, excluded=[0, 1, 2, 3], mask_id=3, seed=seed)


def test_masking_statistics_are_distilberts() -> None:
    masker = _masker()
    rng = np.random.default_rng(1)
    picked = tokens = masked = kept = randomised = 0
    for row in range(3000):
        ids = np.concatenate([[1], rng.integers(4, 1000, 30), [2]])
        m = masker.mask(ids, row)
        assert 1 not in m.labels and 2 not in m.labels  # special tokens are never picked
        tokens += 30
        picked += len(m.positions)
        after = m.input_ids[m.positions]
        masked += int((after == 3).sum())
        kept += int((after == m.labels).sum())
        randomised += int(((after != 3) & (after != m.labels)).sum())
    assert picked / tokens == pytest.approx(0.15, abs=0.005)
    assert masked / picked == pytest.approx(0.8, abs=0.02)
    assert kept / picked == pytest.approx(0.1, abs=0.015)  # a random token equal to the original counts as kept
    assert randomised / picked == pytest.approx(0.1, abs=0.015)


def test_rare_tokens_are_masked_more_often_and_masks_are_a_function_of_seed_and_row() -> None:
    masker = _masker()
    ids = np.concatenate([[1], np.full(20, 10), np.full(20, 900), [2]])  # 10 is frequent, 900 rare
    rare = sum(int((masker.mask(ids, r).labels == 900).sum()) for r in range(500))
    frequent = sum(int((masker.mask(ids, r).labels == 10).sum()) for r in range(500))
    assert rare > 2 * frequent
    uniform = masker.uniform()  # held-out text: BERT's masking, every non-special token alike
    rare = sum(int((uniform.mask(ids, r).labels == 900).sum()) for r in range(500))
    frequent = sum(int((uniform.mask(ids, r).labels == 10).sum()) for r in range(500))
    assert abs(rare - frequent) < 0.2 * (rare + frequent)
    a, b = masker.mask(ids, 7), masker.mask(ids, 7)
    assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.positions, b.positions)
    assert not np.array_equal(_masker(seed=1).mask(ids, 7).positions, a.positions)


class _Tok:
    pad_token_id = 0

    def __call__(self, texts: list[str], **_: object) -> dict[str, list[list[int]]]:
        return {"input_ids": [[1, *[int(w) for w in t.split()], 2] for t in texts]}


def test_batch_scores_the_masked_positions_among_the_kl_positions() -> None:
    masker = _masker()
    texts = [" ".join(str(i) for i in range(100, 130)), "500 501 502"]
    for restrict in (True, False):
        b = Batcher(_Tok(), masker, 64, causal=False, restrict=restrict, device=torch.device("cpu")).from_texts(texts, [0, 1])
        picked = (b.rows[b.scored], b.positions[b.scored])
        masked = [masker.mask(np.asarray([1, *map(int, t.split()), 2]), r) for r, t in enumerate(texts)]
        assert b.labels.tolist() == [int(x) for m in masked for x in m.labels]
        assert picked[1].tolist() == [int(p) for m in masked for p in m.positions]
        assert len(b.rows) == (len(b.labels) if restrict else 32 + 5)
    causal = Batcher(_Tok(), None, 64, causal=True, restrict=False, device=torch.device("cpu")).from_texts(["7 8"], [0])
    assert causal.positions.tolist() == [0, 1, 2] and causal.labels.tolist() == [7, 8, 2]
