"""The regression guard: watched metrics before and after, and which one decides --keep-best."""

from __future__ import annotations

import pytest

from distil_jobs.errors import DistilError
from distil_jobs.train.guard import BestTracker, check, regressions
from distil_jobs.train.methods.base import Metric

WATCHED = [Metric("dev_retrieval_top1", True), Metric("dev_mse", False), Metric("dev_sts_spearman", True)]


def test_a_metric_that_got_worse_in_its_own_direction_is_a_regression():
    untrained = {"dev_retrieval_top1": 0.10, "dev_mse": 0.003, "dev_sts_spearman": 0.82}
    published = {"dev_retrieval_top1": 0.30, "dev_mse": 0.004, "dev_sts_spearman": 0.70}
    assert [w["metric"] for w in regressions(WATCHED, untrained, published)] == ["dev_mse", "dev_sts_spearman"]
    assert regressions(WATCHED, untrained, untrained) == []  # equal is not worse


def test_fail_on_regression_refuses_with_one_line_naming_the_metric():
    with pytest.raises(DistilError, match=r"worse than the untrained one \(dev_sts_spearman 0.8200 → 0.7000\)"):
        check(WATCHED, {"dev_sts_spearman": 0.82}, {"dev_sts_spearman": 0.70}, fail=True)
    assert check(WATCHED, {"dev_sts_spearman": 0.82}, {"dev_sts_spearman": 0.70}, fail=False)[0]["published"] == 0.70


def test_the_best_step_survives_a_restart(tmp_path):
    best = BestTracker(Metric("dev_mse", False), str(tmp_path))
    assert best.improves({"dev_mse": 0.5})
    best.record(100, {"dev_mse": 0.5}, write=True)
    assert not best.improves({"dev_mse": 0.6}) and best.improves({"dev_mse": 0.4})
    again = BestTracker(Metric("dev_mse", False), str(tmp_path))
    assert (again.step, again.value) == (100, 0.5)
