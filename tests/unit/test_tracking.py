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


def test_a_torn_last_line_does_not_block_the_resume(tmp_path, caplog):
    """A run killed mid-write leaves `{"step": 4, "lo`: the resume from step-2 drops it with one warning,
    keeps the good lines and logs on; the tracker's readers see only whole rows."""
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / (s + 1)}) + "\n" for s in range(4))
                    + '{"step": 4, "lo')
    with caplog.at_level("WARNING", logger="distil_jobs.train.tracking"):
        t = Tracker(str(tmp_path), enabled=True, use_wandb=False, project="p", run_name=None, config={},
                    run_key="k", resume_step=2)
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "unparseable" in warnings[0].getMessage()
    t.log(3, {"loss": 0.2})
    t.log(4, {"loss": 0.1})
    assert [r["step"] for r in t.rows()] == [0, 1, 2, 3, 4]
    assert all(json.loads(line) for line in path.read_text().splitlines())
    assert t.plot(str(tmp_path / "curve.png"))


@pytest.mark.parametrize(("env", "mode"), [
    ({}, "offline"),
    ({"WANDB_API_KEY": "k"}, "online"),
    ({"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}, "offline"),
    ({"WANDB_MODE": "disabled"}, "disabled"),
])
def test_wandb_mode_is_wandb_mode_else_online_with_a_key_else_offline(monkeypatch, env, mode):
    from distil_jobs.train.tracking import wandb_mode

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert wandb_mode() == mode


KEY = "dummykey0123456789abcdef0123456789abcdef"  # wandb's 40-character shape, valid for nothing


def test_wandb_mode_offline_wins_over_a_key(tmp_path, monkeypatch, capsys, caplog):
    """WANDB_MODE=offline with a key: no network, done in seconds, and the key is never printed."""
    import time

    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    start = time.monotonic()
    with caplog.at_level("INFO"):
        t = Tracker(str(tmp_path), enabled=True, use_wandb=True, project="distil-test", run_name="unit",
                    config={"lr": 1e-4}, run_key="out/key")
        t.log(1, {"loss": 0.5})
        t.finish({"final_dev_mse": 0.1})
    assert time.monotonic() - start < 60
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    out = capsys.readouterr()
    assert KEY not in out.out + out.err + caplog.text


def test_a_key_alone_never_turns_wandb_on(tmp_path, monkeypatch):
    """train-student without --wandb, WANDB_API_KEY set: wandb is never initialised."""
    wandb = pytest.importorskip("wandb")
    from distil_jobs.artifacts import open_location
    from distil_jobs.jobs.train import Config
    from distil_jobs.train.runner import _tracker

    def refuse(*args, **kwargs):
        raise AssertionError("wandb.init called without --wandb")

    monkeypatch.setattr(wandb, "init", refuse)
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = open_location(str(tmp_path / "out"))
    cfg = Config(output=out.uri)
    t = _tracker(cfg, str(tmp_path / "out"), out, True, str(tmp_path / "out" / "checkpoints"), "dev_mse")
    assert t.wandb is None
    t.log(1, {"loss": 0.5})
    t.finish({})
    assert not (tmp_path / "out" / "wandb").exists()
