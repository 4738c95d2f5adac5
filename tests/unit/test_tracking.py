"""Run tracking: metrics.jsonl (resumes drop the steps they repeat), the PNG curve, offline wandb."""

from __future__ import annotations

import json

import pytest

from distil_jobs.train.tracking import Tracker


def test_metrics_file_png_and_resume_truncation(tmp_path):
    t = Tracker(str(tmp_path), enabled=True, use_wandb=False, project="p", run_name=None, config={}, run_key="k")
    t.log(0, {"dev_mse": 0.004, "dev_retrieval_top1": 0.1})
    for step in range(1, 7):
        t.log(step, {"loss": 1.0 / step, "lr": 1e-4})
    t.log(6, {"dev_mse": 0.002, "dev_retrieval_top1": 0.3})
    png = t.plot(str(tmp_path / "curve.png"))
    assert png and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"

    # A job resumed from the step-4 checkpoint logs steps 5 and 6 again: the old lines go.
    Tracker(str(tmp_path), enabled=True, use_wandb=False, project="p", run_name=None, config={}, run_key="k",
            resume_step=4)
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3, 4]


def test_wandb_without_a_key_logs_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    t = Tracker(str(tmp_path), enabled=True, use_wandb=True, project="distil-test", run_name="unit",
                config={"lr": 1e-4}, run_key="out/x")
    t.log(1, {"loss": 0.5, "note": "not a number"})
    t.finish({"final_dev_mse": 0.1})
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_rank_other_than_zero_writes_nothing(tmp_path):
    t = Tracker(str(tmp_path / "r1"), enabled=False, use_wandb=True, project="p", run_name=None, config={},
                run_key="k")
    t.log(1, {"loss": 1.0})
    assert not (tmp_path / "r1").exists()
