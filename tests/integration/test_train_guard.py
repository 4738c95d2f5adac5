"""The guard every training run has: watched dev metrics against the untrained student,
--keep-best, --fail-on-regression; and the parallel-data options that make a student better."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from train_helpers import STUDENT, make_targets, metrics


@pytest.fixture(scope="module")
def targets(tmp_path_factory, data_path) -> Path:
    from tests.conftest import run_cli

    return make_targets(run_cli, data_path, tmp_path_factory.mktemp("targets"), rows=200)


@pytest.fixture(scope="module")
def sts(data_path) -> str:
    return str(data_path / "stsb" / "dev.jsonl")


def _dev_evals(out: Path) -> list[dict]:
    return [r for r in metrics(out) if "dev_retrieval_top1" in r]


def test_keep_best_publishes_the_best_evaluation_step(cli, targets, sts, tmp_path):
    out = tmp_path / "best"
    cli("train-student", "--targets", str(targets), *STUDENT, "--lr", "1e-3", "--max-steps", "6", "--eval-steps", "2",
        "--dev-fraction", "0.2", "--watch-sts", sts, "--watch-rows", "60", "--keep-best", "dev_sts_spearman",
        "--output", str(out), check=True)
    evals = [r for r in _dev_evals(out) if r["step"] > 0]
    best = max(evals, key=lambda r: r["dev_sts_spearman"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["published_step"] == best["step"]
    assert manifest["extra"]["final_metrics"]["dev_sts_spearman"] == pytest.approx(best["dev_sts_spearman"])
    # The published folder holds the best step's weights: it reproduces that step's STS score.
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    rows = [json.loads(line) for line in Path(sts).read_text(encoding="utf-8").splitlines()][:60]
    model = SentenceTransformer(str(out / "final"), device="cpu")
    a = model.encode([r["sentence1"] for r in rows], normalize_embeddings=True)
    b = model.encode([r["sentence2"] for r in rows], normalize_embeddings=True)
    assert spearmanr((a * b).sum(1), [r["score"] for r in rows]).statistic == pytest.approx(best["dev_sts_spearman"],
                                                                                             abs=2e-3)


def test_fail_on_regression_publishes_nothing_and_says_which_metric(cli, targets, sts, tmp_path):
    out = tmp_path / "worse"
    done = cli("train-student", "--targets", str(targets), *STUDENT, "--lr", "3e-2", "--max-steps", "6",
               "--dev-fraction", "0.2", "--watch-sts", sts, "--watch-rows", "60", "--fail-on-regression",
               "--output", str(out))
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the trained student is worse than the untrained one (") and "dev_sts_spearman" in last
    assert not (out / "manifest.json").exists() and not (out / "final").exists()


def test_without_the_flag_the_manifest_names_the_regression(cli, targets, sts, tmp_path):
    out = tmp_path / "worse-published"
    done = cli("train-student", "--targets", str(targets), *STUDENT, "--lr", "3e-2", "--max-steps", "6",
               "--dev-fraction", "0.2", "--watch-sts", sts, "--watch-rows", "60", "--output", str(out), check=True)
    assert "WORSE than the untrained one" in done.stderr
    regressed = json.loads((out / "manifest.json").read_text())["extra"]["regressions"]
    assert "dev_sts_spearman" in [r["metric"] for r in regressed]


def test_the_ranking_term_beats_plain_mse_on_dev_retrieval_in_the_same_steps(cli, targets, tmp_path):
    common = ["--targets", str(targets), *STUDENT, "--lr", "2e-4", "--epochs", "3", "--dev-fraction", "0.25",
              "--eval-steps", "0", "--seed", "1"]
    cli("train-student", *common, "--output", str(tmp_path / "mse"), check=True)
    # Measured on these 200 rows: MSE 0.12 -> 0.22; with the ranking term (student anchor) 0.34.
    cli("train-student", *common, "--contrastive-weight", "0.3", "--contrastive-anchor", "student",
        "--output", str(tmp_path / "ranked"), check=True)
    mse, ranked = _dev_evals(tmp_path / "mse")[-1], _dev_evals(tmp_path / "ranked")[-1]
    assert ranked["step"] == mse["step"]
    assert ranked["dev_retrieval_top1"] > mse["dev_retrieval_top1"] + 0.05


def test_extended_vocabulary_keeps_tone_marks_leaves_english_alone_and_reloads(cli, targets, data_path, tmp_path):
    out = tmp_path / "vocab"
    cli("train-student", "--targets", str(targets), *STUDENT, "--max-steps", "2", "--dev-fraction", "0.1",
        "--extend-vocab", "2000", "--vocab-corpus", str(data_path / "corpus" / "sentences_yo.tsv"),
        "--output", str(out), check=True)
    from sentence_transformers import SentenceTransformer

    from distil_jobs.models.registry import packaged_model_path

    student = SentenceTransformer(str(out / "final"), device="cpu")
    old = SentenceTransformer(str(packaged_model_path("minilm")), device="cpu")
    text = "Ẹ kú àárọ̀, ṣé àlàáfíà ni?"
    ids = student.tokenizer(text)["input_ids"]
    decoded = student.tokenizer.decode(ids, skip_special_tokens=True)
    assert all(ch in decoded for ch in ("ẹ", "ṣ", "à", "ọ̀"))
    assert old.tokenizer.tokenize(text) == ["e", "ku", "aa", "##ro", ",", "se", "ala", "##af", "##ia", "ni", "?"]
    lines = (data_path / "stsb" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    english = [json.loads(line)["sentence1"] for line in lines]
    english = [t for t in english[:300] if t.isascii()]
    assert [student.tokenizer.tokenize(t) for t in english] == [old.tokenizer.tokenize(t) for t in english]
    extension = json.loads((out / "manifest.json").read_text())["extra"]["vocab_extension"]
    assert extension["added"] > 100
    assert student[0].auto_model.get_input_embeddings().weight.shape[0] == extension["vocab_size"]
    assert np.isfinite(student.encode([text])).all()
