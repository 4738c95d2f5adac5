"""The distillation losses on real-sized embedding tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distil_jobs.errors import DistilError
from distil_jobs.train.methods.losses import cosine, kld, make_loss, mse, mse_kld, parallel_loss


@pytest.fixture()
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 384, generator=g), torch.randn(8, 384, generator=g)


def test_every_loss_is_zero_when_the_student_matches_the_teacher(pair):
    teacher = pair[1]
    for name in ("mse", "cosine", "kld", "mse+kld"):
        assert float(make_loss(name, temperature=2.0)(teacher.clone(), teacher)) == pytest.approx(0.0, abs=1e-6)


def test_mse_and_cosine_match_their_definitions(pair):
    s, t = pair
    assert torch.allclose(mse(s, t), ((s - t) ** 2).mean())
    assert torch.allclose(cosine(s, t), 1 - F.cosine_similarity(s, t).mean())
    assert float(cosine(s, -s)) == pytest.approx(2.0)


def test_kld_is_kl_of_softmax_over_dimensions_scaled_by_t_squared(pair):
    s, t = pair
    temp = 3.0
    p_t = F.softmax(t / temp, dim=-1)
    expected = (p_t * (p_t.log() - F.log_softmax(s / temp, dim=-1))).sum(-1).mean() * temp**2
    assert torch.allclose(kld(s, t, temp), expected, rtol=1e-5)
    assert float(kld(s, t, temp)) > 0


def test_mse_kld_weights_kld_by_alpha(pair):
    s, t = pair
    got = mse_kld(s, t, temperature=2.0, alpha=0.25)
    assert torch.allclose(got, 0.25 * kld(s, t, 2.0) + 0.75 * mse(s, t))
    assert torch.allclose(make_loss("mse+kld", 2.0, 1.0)(s, t), kld(s, t, 2.0))
    assert torch.allclose(make_loss("mse+kld", 2.0, 0.0)(s, t), mse(s, t))


def test_parallel_loss_pulls_both_sides_to_the_teacher_source(pair):
    src, tgt = pair
    teacher = torch.zeros_like(src)
    assert torch.allclose(parallel_loss(src, tgt, teacher, mse), mse(src, teacher) + mse(tgt, teacher))
    with_student_term = parallel_loss(src, tgt, teacher, mse, student_weight=0.5)
    assert torch.allclose(with_student_term, mse(src, teacher) + mse(tgt, teacher) + 0.5 * mse(tgt, src))


def test_losses_give_gradients_to_the_student(pair):
    s, t = pair
    s = s.clone().requires_grad_(True)
    make_loss("mse+kld")(s, t).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0


def test_unknown_loss_is_a_user_error():
    with pytest.raises(DistilError, match="unknown loss 'l1'"):
        make_loss("l1")


def test_in_batch_ranking_equals_a_hand_computation():
    from distil_jobs.train.methods.losses import in_batch_ranking

    q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    k = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    t = 0.5
    # cosines: q0·k0 = 1, q0·k1 = 0, q1·k0 = 0.6, q1·k1 = 0.8 (k normalised)
    sim = torch.tensor([[1.0, 0.0], [0.6, 0.8]]) / t
    import math

    rows = -(math.log(math.exp(sim[0, 0]) / (math.exp(sim[0, 0]) + math.exp(sim[0, 1])))
             + math.log(math.exp(sim[1, 1]) / (math.exp(sim[1, 0]) + math.exp(sim[1, 1])))) / 2
    cols = -(math.log(math.exp(sim[0, 0]) / (math.exp(sim[0, 0]) + math.exp(sim[1, 0])))
             + math.log(math.exp(sim[1, 1]) / (math.exp(sim[0, 1]) + math.exp(sim[1, 1])))) / 2
    assert float(in_batch_ranking(q, k, t)) == pytest.approx(0.5 * (rows + cols), rel=1e-6)


def test_in_batch_ranking_of_one_row_is_zero_with_zero_gradient():
    from distil_jobs.train.methods.losses import in_batch_ranking

    q = torch.randn(1, 384, requires_grad=True)
    loss = in_batch_ranking(q, torch.randn(1, 384), 0.05)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-7)
    assert torch.isfinite(q.grad).all() and float(q.grad.abs().max()) == pytest.approx(0.0, abs=1e-7)


def test_similarity_compares_how_rows_relate_whatever_the_widths():
    from distil_jobs.train.methods.losses import similarity

    torch.manual_seed(0)
    teacher = torch.randn(6, 4)
    rotate = torch.linalg.qr(torch.randn(8, 4)).Q.T  # 4 orthonormal rows in 8 dims: keeps every cosine
    assert similarity(3.0 * teacher @ rotate, teacher).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(6, 8, requires_grad=True)
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    off = ~torch.eye(6, dtype=torch.bool)
    expected = ((s @ s.T - t @ t.T)[off] ** 2).mean()
    loss = similarity(student, teacher)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    with torch.no_grad():
        assert similarity(student - 0.1 * student.grad / student.grad.norm(), teacher) < loss
    one = torch.randn(1, 8, requires_grad=True)
    single = similarity(one, teacher[:1])
    single.backward()
    assert single.item() == 0.0 and not one.grad.any()
