"""`distil-jobs evaluate-mteb` end to end on CPU with MiniLM and small real task subsets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import head_jsonl

JOB = "evaluate-mteb"


@pytest.fixture(scope="module")
def mteb_env(tmp_path_factory) -> dict[str, str]:
    """Offline, with an empty HF home: named tasks cannot come from anywhere, local ones must still run."""
    root = tmp_path_factory.mktemp("mteb-env")
    return {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MTEB_CACHE": str(root / "mteb"),
            "HF_HOME": str(root / "hf")}


@pytest.fixture(scope="module")
def task_dirs(tmp_path_factory, data_path: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tasks")
    # emotion rows are not sorted by label, so the first rows hold every class
    head_jsonl(data_path / "emotion" / "train.jsonl", root / "emotion" / "train.jsonl", 300)
    head_jsonl(data_path / "emotion" / "test.jsonl", root / "emotion" / "test.jsonl", 200)
    head_jsonl(data_path / "stsb" / "test.jsonl", root / "stsb" / "test.jsonl", 500)
    head_jsonl(data_path / "menyo20k" / "test.jsonl", root / "menyo20k" / "test.jsonl", 150)
    return {"emotion": root / "emotion", "stsb": root / "stsb", "menyo": root / "menyo20k"}


@pytest.fixture(scope="module")
def student_run(tmp_path_factory, minilm_path: str) -> Path:
    """A train-student-shaped output: a 2-layer MiniLM slice in final/ and a manifest naming the run."""
    from sentence_transformers import SentenceTransformer

    run = tmp_path_factory.mktemp("student") / "run-2l"
    st = SentenceTransformer(minilm_path, device="cpu")
    bert = st[0].auto_model
    bert.encoder.layer = bert.encoder.layer[:2]
    bert.config.num_hidden_layers = 2
    st.save(str(run / "final"))
    (run / "manifest.json").write_text(json.dumps({"kind": "student-model", "job": "train-student",
                                                   "config": {}, "extra": {"label": "minilm-2l"}}))
    return run


def _local(kind: str, path: Path, name: str, extra: str = "") -> list[str]:
    return ["--local-task", f"kind={kind},path={path},name={name}{extra}"]


@pytest.mark.slow
def test_local_classification_sts_and_bitext_run_with_mteb_scores(cli, tmp_path, task_dirs, mteb_env, minilm_path):
    out = tmp_path / "eval"
    done = cli(JOB, "--model", "minilm", "--output", str(out), "--batch-size", "64",
               *_local("classification", task_dirs["emotion"], "Emo"),
               *_local("sts", task_dirs["stsb"], "STSB500"),
               *_local("bitext", task_dirs["menyo"], "Menyo", ",columns=en:yo"), env=mteb_env)
    assert done.returncode == 0, done.stderr[-3000:]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "mteb-report"
    assert manifest["extra"]["pairs"] == ["minilm/Emo", "minilm/STSB500", "minilm/Menyo"]
    assert "CC BY-NC 4.0" in manifest["license"]  # menyo20k is non-commercial: the report says so
    summary = json.loads((out / "summary.json").read_text())
    scores = {t: v["minilm"] for t, v in summary["scores"].items()}
    assert 1 / 6 < scores["Emo"] <= 1  # six classes: better than chance
    assert 0 < scores["Menyo"] <= 1
    assert set(summary["subset_scores"]["Menyo"]["minilm"]) == {"test/en-yo", "test/yo-en"}
    for task in ("Emo", "STSB500", "Menyo"):  # mteb's own result files
        assert list((out / "results" / "minilm").glob(f"*/{task}.json"))
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| STSB500 | STS | cosine_spearman |" in (out / "report.md").read_text()

    # Results are reused by (model, task): a rerun on other settings is refused instead of mixed in.
    other = cli(JOB, "--model", "minilm", "--output", str(out), "--max-test-rows", "100",
                *_local("sts", task_dirs["stsb"], "STSB500"), env=mteb_env)
    _assert_one_line_error(other, "different settings (max_test_rows)", "--overwrite")

    # The STS main score is mteb's Spearman of cosine similarities: recompute it directly.
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    rows = [json.loads(line) for line in (task_dirs["stsb"] / "test.jsonl").read_text().splitlines()]
    model = SentenceTransformer(minilm_path, device="cpu")
    a = model.encode([r["sentence1"] for r in rows], normalize_embeddings=True, batch_size=64)
    b = model.encode([r["sentence2"] for r in rows], normalize_embeddings=True, batch_size=64)
    direct = spearmanr(np.sum(a * b, axis=1), [r["score"] for r in rows]).statistic
    assert abs(scores["STSB500"] - direct) < 0.03


@pytest.mark.slow
def test_two_models_sharded_report_ratio_and_rerun_skips_finished_pairs(cli, tmp_path, task_dirs, mteb_env,
                                                                         student_run):
    out = tmp_path / "eval"
    tasks = [*_local("classification", task_dirs["emotion"], "Emo"), *_local("sts", task_dirs["stsb"], "STSB")]
    first = cli(JOB, "--model", "minilm", "--output", str(out), *tasks, env=mteb_env)
    assert first.returncode == 0, first.stderr[-3000:]
    minilm_file = next((out / "results" / "minilm").glob("*/STSB.json"))
    stamp = minilm_file.stat().st_mtime_ns

    # Add the student; two array tasks: shard 0 holds only the finished minilm pairs.
    both = ["--model", "minilm", "--model", str(student_run), "--output", str(out), *tasks]
    shard0 = cli(JOB, *both, env={**mteb_env, "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"})
    assert shard0.returncode == 0, shard0.stderr[-3000:]
    assert "skip minilm × STSB: already evaluated" in shard0.stderr
    assert not (out / "manifest.json").exists()  # the old report no longer matches the request
    merge = cli(JOB, *both, "--merge", env=mteb_env)
    _assert_one_line_error(merge, "have no result yet", "minilm-2l × Emo")

    shard1 = cli(JOB, *both, env={**mteb_env, "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"})
    assert shard1.returncode == 0, shard1.stderr[-3000:]
    assert minilm_file.stat().st_mtime_ns == stamp  # finished pairs were not rerun

    summary = json.loads((out / "summary.json").read_text())
    assert [m["label"] for m in summary["models"]] == ["minilm", "minilm-2l"]  # label from the run's manifest
    assert summary["reference"] == "minilm"
    for task in ("Emo", "STSB"):
        s = summary["scores"][task]
        assert summary["ratios"][task]["minilm-2l"] == pytest.approx(s["minilm-2l"] / s["minilm"])
    report = (out / "report.md").read_text()
    assert "| task | type | metric | minilm | minilm-2l | minilm-2l / minilm |" in report
    assert json.loads((out / "manifest.json").read_text())["extra"]["reference"] == "minilm"

    again = cli(JOB, *both, env=mteb_env)
    assert again.returncode == 0 and "nothing to do" in again.stderr

    # Another reference needs no model: --merge rebuilds the report and its manifest from the results.
    rebased = cli(JOB, *both, "--merge", "--reference", "minilm-2l", env=mteb_env)
    assert rebased.returncode == 0, rebased.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["extra"]["reference"] == "minilm-2l"
    assert "| minilm | minilm-2l | minilm / minilm-2l |" in (out / "report.md").read_text()


def _assert_one_line_error(done, *fragments: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ")
    for f in fragments:
        assert f in last


def test_unknown_task_name_lists_close_matches(cli, tmp_path, mteb_env):
    out = tmp_path / "eval"
    done = cli(JOB, "--model", "minilm", "--tasks", "Bankin77Classification", "--output", str(out), env=mteb_env)
    _assert_one_line_error(done, "unknown MTEB task 'Bankin77Classification'", "Banking77Classification")
    assert not out.exists()


def test_named_task_not_in_the_offline_cache_fails_naming_it(cli, tmp_path, mteb_env):
    out = tmp_path / "eval"
    done = cli(JOB, "--model", "minilm", "--tasks", "STSBenchmark", "--output", str(out), env=mteb_env)
    _assert_one_line_error(done, "MTEB task STSBenchmark", "HF_HUB_OFFLINE=1")
    assert not out.exists()


def test_local_task_folder_without_test_split_is_refused(cli, tmp_path, data_path, mteb_env):
    folder = tmp_path / "no-test"
    head_jsonl(data_path / "emotion" / "train.jsonl", folder / "train.jsonl", 20)
    out = tmp_path / "eval"
    done = cli(JOB, "--model", "minilm", "--output", str(out), *_local("classification", folder, "X"), env=mteb_env)
    _assert_one_line_error(done, "has no test split", "train.jsonl")
    assert not out.exists()


def test_model_that_does_not_exist_is_refused(cli, tmp_path, task_dirs, mteb_env):
    out = tmp_path / "eval"
    missing = tmp_path / "no-such-model"
    done = cli(JOB, "--model", str(missing), "--output", str(out), *_local("sts", task_dirs["stsb"], "S"),
               env=mteb_env)
    _assert_one_line_error(done, f"model '{missing}' not found")
    assert not out.exists()


def test_ready_config_resolves_every_local_task(cli, data_path):
    done = cli(JOB, "--config", str(Path(__file__).parents[2] / "jobs" / "evaluate.yaml"), "--output", "x",
               "--dry-run", env={"DISTIL_DATA_DIR": str(data_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("Banking77", "Emotion", "AmazonCounterfactualEn", "AfriSentiYor", "STSB", "Menyo20kBitext"):
        assert f"name: {name}" in done.stdout
    assert os.path.join(str(data_path), "menyo20k") in done.stdout
