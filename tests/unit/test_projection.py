"""Closed-form starts for the student→teacher projection, and Yoruba without its diacritics."""

from __future__ import annotations

import pytest
import torch

from distil_jobs.train.methods.embedding_data import strip_diacritics
from distil_jobs.train.methods.projection import fit


@pytest.fixture
def linear_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 8, generator=g, dtype=torch.float64)
    w = torch.randn(8, 16, generator=g, dtype=torch.float64)
    return x, w, x @ w + 0.5


@pytest.mark.parametrize("mode", ["lstsq", "ridge"])
def test_least_squares_recovers_a_linear_map(linear_data, mode):
    x, w, y = linear_data
    w_hat, b = fit(x, y, mode, ridge=1e-6)
    assert torch.allclose(w_hat, w, atol=1e-4) and torch.allclose(b, torch.full((16,), 0.5, dtype=b.dtype), atol=1e-4)


def test_procrustes_is_a_scaled_isometry_so_it_keeps_the_students_cosines(linear_data):
    x, _, _ = linear_data
    q, _ = torch.linalg.qr(torch.randn(16, 8, dtype=torch.float64))  # 8 -> 16, orthonormal columns
    noisy = 3.0 * x @ q.T + 0.1 * torch.randn(500, 16, dtype=torch.float64)
    w_hat, b = fit(x, noisy, "procrustes")
    assert torch.allclose(w_hat, 3.0 * q.T, atol=0.05) and not b.any()
    # Every cosine between two student embeddings is what it was: STS and retrieval start unchanged.
    cos = torch.nn.functional.cosine_similarity
    assert torch.allclose(cos((x @ w_hat)[:-1], (x @ w_hat)[1:]), cos(x[:-1], x[1:]), atol=1e-9)


def test_ridge_shrinks_where_lstsq_would_chase_noise():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 30, generator=g, dtype=torch.float64)  # fewer rows than dims: lstsq interpolates noise
    y = torch.randn(20, 4, generator=g, dtype=torch.float64)
    assert fit(x, y, "ridge")[0].norm() < fit(x, y, "lstsq")[0].norm()


def test_strip_diacritics_types_yoruba_as_it_is_often_written():
    assert strip_diacritics("Ẹ kú àárọ̀, ṣé àlàáfíà ni?") == "E ku aaro, se alaafia ni?"
    assert strip_diacritics("plain English") == "plain English"
