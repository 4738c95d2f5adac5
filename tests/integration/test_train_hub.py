"""A student published to hf:// (and pushed with --push-to), through the local Hub stand-in that
test_hub_artifacts.py defines (the public Hub cannot be reached here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from train_helpers import STUDENT, make_targets


@pytest.fixture()
def targets(tmp_path, data_path) -> Path:
    from tests.conftest import run_cli

    return make_targets(run_cli, data_path, tmp_path / "t", rows=40)


def test_student_to_hub_output_and_push_to(local_hub, targets, tmp_path, monkeypatch):
    from distil_jobs.cli import main

    monkeypatch.setenv("HF_TOKEN", "hf_do_not_log_me")
    monkeypatch.setenv("DISTIL_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(main, [
        "train-student", "--targets", str(targets), *STUDENT, "--max-steps", "1", "--dev-fraction", "0",
        "--output", "hf://me/student", "--push-to", "hf://me/student-pub"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    repo = local_hub.root / "me" / "student"
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["kind"] == "student-model"
    assert local_hub.commits[-2]["files"] == ["manifest.json"]  # the manifest is written after the model
    assert (repo / "final" / "model.safetensors").exists() and (repo / "metrics.jsonl").exists()
    assert not (repo / "checkpoints").exists()  # checkpoints stay in the local work folder

    pushed = local_hub.commits[-1]["files"]  # --push-to: one commit with the whole model folder
    assert {"modules.json", "model.safetensors", "config.json", "metrics.jsonl"} <= set(pushed)
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(local_hub.root / "me" / "student-pub"), device="cpu").encode(["x"]).shape == (1, 384)
    assert "hf_do_not_log_me" not in result.output and "hf_do_not_log_me" not in json.dumps(manifest)
