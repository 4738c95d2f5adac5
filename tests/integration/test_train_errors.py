"""Bad input to train-student: one line naming the problem and the fix, non-zero exit, no artifact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from train_helpers import STUDENT, make_targets, raw_input


@pytest.fixture(scope="module")
def targets(tmp_path_factory, data_path) -> Path:
    from tests.conftest import run_cli

    return make_targets(run_cli, data_path, tmp_path_factory.mktemp("targets"), rows=40)


def wide_targets(targets: Path, dest: Path) -> Path:
    """The same artifact with 768-dim targets (as from a wider teacher)."""
    shutil.copytree(targets, dest)
    for part in (dest / "data").glob("*.parquet"):
        table = pq.read_table(part)
        emb = np.asarray(table.column("teacher_embedding_final").combine_chunks().flatten()).reshape(table.num_rows, -1)
        wide = np.concatenate([emb, emb], axis=1).astype(np.float32)
        col = pa.FixedSizeListArray.from_arrays(pa.array(wide.reshape(-1)), wide.shape[1])
        pq.write_table(table.set_column(table.schema.get_field_index("teacher_embedding_final"),
                                        "teacher_embedding_final", col), part)
    # The manifest must promise what the files now hold, or readers (rightly) refuse them.
    from distil_jobs.artifacts import open_location
    from distil_jobs.artifacts.manifest import file_entries

    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["files"] = file_entries(open_location(str(dest)), [f["path"] for f in manifest["files"]])
    manifest["extra"]["embedding_columns"]["teacher_embedding_final"] = 768
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


CASES = {
    "targets_without_manifest": (lambda t, tmp: ["--targets", str(_strip_manifest(t, tmp))], "has no manifest.json"),
    "unknown_loss": (lambda t, tmp: ["--targets", str(t), "--loss", "l1"], "--loss='l1': must be one of"),
    "pair_column_missing": (lambda t, tmp: ["--targets", str(t), "--pair-column", "fr"],
                            "column 'fr' not in"),
    "output_not_writable": (lambda t, tmp: ["--targets", str(t), "--output", str(_a_file(tmp) / "out")],
                            "is not writable"),
    "dim_mismatch_without_projection": (lambda t, tmp: ["--targets", str(wide_targets(t, tmp / "wide")),
                                                        "--no-projection"], "gives 384-dim embeddings but the targets"),
    "online_without_teacher": (lambda t, tmp: ["--input", str(raw_input(t))], "--input needs --teacher"),
    # The Yoruba options: each misuse is caught before anything is claimed.
    "keep_best_unknown_metric": (lambda t, tmp: ["--targets", str(t), "--keep-best", "dev_bleu"],
                                 "--keep-best dev_bleu: --method embedding reports dev_retrieval_top1"),
    "ranking_without_pairs": (lambda t, tmp: ["--targets", str(t), "--monolingual", "--contrastive-weight", "0.3"],
                              "need parallel data"),
    "vocab_without_pairs": (lambda t, tmp: ["--targets", str(t), "--monolingual", "--extend-vocab", "100"],
                            "--extend-vocab learns the translations' vocabulary"),
    "vocab_corpus_without_text": (lambda t, tmp: ["--targets", str(t), "--extend-vocab", "100", "--vocab-corpus",
                                                  str(t.parent / "menyo20k" / "train.jsonl")],
                                  "pass --vocab-corpus a file with a 'text' column"),
    "watch_sts_not_sts": (lambda t, tmp: ["--targets", str(t), "--watch-sts", str(raw_input(t))],
                          "has no column sentence1"),
    "projection_lr_with_deepspeed": (lambda t, tmp: ["--targets", str(wide_targets(t, tmp / "wide")),
                                                     "--projection-lr-scale", "10", "--deepspeed-stage", "0"],
                                     "per-group learning rates (projection, encoder) are not supported with DeepSpeed"),
}


def _strip_manifest(targets: Path, tmp: Path) -> Path:
    dest = tmp / "nomanifest"
    shutil.copytree(targets, dest)
    (dest / "manifest.json").unlink()
    return dest


def _a_file(tmp: Path) -> Path:
    f = tmp / "plain-file"
    f.write_text("not a folder")
    return f


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line_and_no_artifact(cli, targets, tmp_path, case):
    make_args, expected = CASES[case]
    args = make_args(targets, tmp_path)
    out = tmp_path / "student"
    if "--output" not in args:
        args += ["--output", str(out)]
    done = cli("train-student", *STUDENT, "--max-steps", "1", *args)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert not (out / "manifest.json").exists()
    assert not (out / "final").exists()


def test_a_resume_with_other_settings_is_refused(cli, targets, tmp_path):
    out = tmp_path / "student"
    (out).mkdir()
    (out / "_shards").mkdir()
    (out / "_shards" / "run.json").write_text(json.dumps({"job": "train-student", "fingerprint": {"lr": 1.0}}))
    # ...which left work behind (a checkpoint): mixing it with other settings is refused.
    (out / "checkpoints" / "step-1").mkdir(parents=True)
    (out / "checkpoints" / "step-1" / "complete.json").write_text(json.dumps({"step": 1}))
    done = cli("train-student", "--targets", str(targets), *STUDENT, "--max-steps", "1", "--output", str(out))
    assert done.returncode == 2 and "holds a run with different settings" in done.stderr
