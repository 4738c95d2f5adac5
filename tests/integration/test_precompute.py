"""precompute-embeddings end to end: real MiniLM, real MENYO-20k rows, the CLI as a user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import head_jsonl

COMMON = ["--teacher", "minilm", "--text-column", "en", "--max-length", "64"]


def load_rows(out: Path) -> dict[str, list]:
    files = sorted((out / "data").glob("*.parquet"))
    table = pq.read_table(files) if len(files) > 1 else pq.read_table(files[0])
    return table.to_pydict()


def test_embeddings_match_sentence_transformers_and_keep_every_column(cli, menyo_small, minilm_path, tmp_path):
    out = tmp_path / "emb"
    cli("precompute-embeddings", "--input", str(menyo_small), "--output", str(out), *COMMON,
        "--pair-column", "yo", "--dtype", "float32", "--chunk-rows", "64", check=True)

    import datasets
    from sentence_transformers import SentenceTransformer

    ds = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    source = [json.loads(line) for line in menyo_small.read_text().splitlines()]
    assert ds["row_idx"] == list(range(len(source)))
    assert ds["id"] == [r["id"] for r in source]
    assert ds["en"] == [r["en"] for r in source] and ds["yo"] == [r["yo"] for r in source]

    model = SentenceTransformer(minilm_path, device="cpu")
    model.max_seq_length = 64
    expected = model.encode([r["en"] for r in source])
    got = np.asarray(ds["teacher_embedding_final"], dtype=np.float32)
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() >= 0.999

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "teacher-embeddings" and manifest["rows"] == len(source)
    assert manifest["license"] == "CC BY-NC 4.0"
    assert {f["path"] for f in manifest["files"]} == {f"data/{p.name}" for p in (out / "data").glob("*.parquet")}
    assert manifest["extra"]["embedding_columns"] == {"teacher_embedding_final": 384}


def test_two_shards_produce_exactly_the_rows_of_one_shard(cli, menyo_small, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ["--input", str(menyo_small), *COMMON, "--chunk-rows", "50"]
    procs = [subprocess.Popen([sys.executable, "-m", "distil_jobs.cli", "precompute-embeddings", *args,
                               "--output", str(two), "--num-shards", "2", "--shard-index", str(i)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    cli("precompute-embeddings", *args, "--output", str(one), check=True)
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    a, b = load_rows(one), load_rows(two)
    assert b["row_idx"] == a["row_idx"] == list(range(200))
    assert b["en"] == a["en"]
    np.testing.assert_allclose(np.asarray(b["teacher_embedding_final"], dtype=np.float32),
                               np.asarray(a["teacher_embedding_final"], dtype=np.float32), atol=2e-3)
    assert json.loads((two / "manifest.json").read_text())["extra"]["shards"] == 2


def test_killed_precompute_resumes_with_every_row_once(cli, data_path, tmp_path):
    src = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "in.jsonl", 400)
    out = tmp_path / "emb"
    args = ["precompute-embeddings", "--input", str(src), "--output", str(out), *COMMON, "--chunk-rows", "25",
            "--batch-size", "8"]
    proc = subprocess.Popen([sys.executable, "-m", "distil_jobs.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "data").glob("*.parquet"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    published = len(list((out / "data").glob("*.parquet")))
    assert 3 <= published < 16, "the kill should land mid-run"
    assert not (out / "manifest.json").exists()

    reader = cli("inspect", str(out))
    assert reader.returncode != 0 and "has no manifest.json" in reader.stderr

    cli(*args, check=True)
    rows = load_rows(out)
    assert rows["row_idx"] == list(range(400))  # every row, exactly once, in input order
    assert json.loads((out / "manifest.json").read_text())["rows"] == 400
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_hidden_states_and_pre_dense_have_the_right_shapes(cli, menyo_small, tmp_path):
    hs, pre = tmp_path / "hs", tmp_path / "pre"
    cli("precompute-embeddings", "--input", str(menyo_small), "--output", str(hs), *COMMON, "--max-rows", "40",
        "--output-type", "hidden_states", "--layers", "0,3,6", check=True)
    cli("precompute-embeddings", "--input", str(menyo_small), "--output", str(pre), *COMMON, "--max-rows", "40",
        "--output-type", "pre_dense", check=True)
    rows = load_rows(hs)
    for layer in (0, 3, 6):
        assert np.asarray(rows[f"hidden_state_layer_{layer}"]).shape == (40, 384)
    emb = np.asarray(load_rows(pre)["teacher_embedding_pre_dense"], dtype=np.float32)
    assert emb.shape == (40, 384)
    # MiniLM ends in Normalize; the pre-dense output is taken before it, so it is not unit length.
    assert np.abs(np.linalg.norm(emb, axis=1) - 1).max() > 0.5


def test_finalize_names_missing_shards_then_completes(cli, menyo_small, tmp_path):
    out = tmp_path / "emb"
    base = ["precompute-embeddings", "--input", str(menyo_small), "--output", str(out), *COMMON,
            "--max-rows", "60", "--num-shards", "2"]
    cli(*base, "--shard-index", "0", check=True)
    assert not (out / "manifest.json").exists()
    check = cli("precompute-embeddings", "--finalize", "--output", str(out))
    assert check.returncode != 0 and "1 of 2 shard(s) not done: 1" in check.stderr
    cli(*base, "--shard-index", "1", check=True)
    assert json.loads((out / "manifest.json").read_text())["rows"] == 60


def test_shard_from_slurm_array_environment(cli, menyo_small, tmp_path):
    out = tmp_path / "emb"
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "0"}
    cli("precompute-embeddings", "--input", str(menyo_small), "--output", str(out), *COMMON, "--max-rows", "60",
        env=env, check=True)
    assert [p.name for p in (out / "data").glob("*.parquet")] == ["part-0000000030-0000000060.parquet"]
    assert (out / "_shards" / "shard-00001-of-00002.done").exists()


def test_push_every_publishes_progress_and_partial_reads_need_a_flag(cli, menyo_small, tmp_path):
    from distil_jobs.data import read_table
    from distil_jobs.errors import DistilError

    out = tmp_path / "emb"
    cli("precompute-embeddings", "--input", str(menyo_small), "--output", str(out), *COMMON, "--max-rows", "80",
        "--num-shards", "2", "--shard-index", "0", "--chunk-rows", "10", "--push-every", "20", check=True)
    progress = json.loads((out / "progress.json").read_text())
    assert len(progress["files"]) == 4 and progress["complete"] is False
    with pytest.raises(DistilError, match=r"no manifest\.json"):
        read_table(str(out))
    assert read_table(str(out), allow_partial=True).num_rows == 40


def test_skip_empty_counts_skipped_rows(cli, data_path, tmp_path):
    def blank_some(row):
        if row["id"] in ("menyo-train-3", "menyo-train-7"):
            row["en"] = "  " if row["id"] == "menyo-train-3" else None
        return row

    src = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "in.jsonl", 30, blank_some)
    out = tmp_path / "emb"
    failed = cli("precompute-embeddings", "--input", str(src), "--output", str(out), *COMMON)
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines()[-1].startswith("error: 2 empty text(s) in column 'en' (first at row 3)")
    assert not out.exists() or not any(out.iterdir())
    cli("precompute-embeddings", "--input", str(src), "--output", str(out), *COMMON, "--skip-empty", check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 28 and manifest["extra"]["skipped_empty"] == 2


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        ("missing file", ["--input", "{tmp}/nope.jsonl"], "input {tmp}/nope.jsonl not found"),
        ("missing column", ["--text-column", "english"], "column 'english' not in"),
        ("unknown output type", ["--output-type", "logits"], "--output-type='logits': must be one of"),
        ("layer out of range", ["--output-type", "hidden_states", "--layers", "0,9"], "layer 9 out of range"),
        ("unreadable model", ["--teacher", "{tmp}/no-model"], "not found"),
        ("shard out of range", ["--num-shards", "2", "--shard-index", "2"], "shard index 2 is out of range"),
        ("unknown config key", ["--config", "{tmp}/bad.yaml"], "unknown key 'batchsize'"),
        ("bad env type", [], "DISTIL_BATCH_SIZE='many': expected an integer"),
    ],
)
def test_bad_input_fails_with_one_line_and_no_artifact(cli, menyo_small, tmp_path, case, extra, message):
    (tmp_path / "bad.yaml").write_text("batchsize: 3\n")
    out = tmp_path / "out"
    args = ["precompute-embeddings", "--input", str(menyo_small), "--output", str(out), *COMMON]
    args += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    env = {"DISTIL_BATCH_SIZE": "many"} if case == "bad env type" else {}
    done = cli(*args, env=env)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message.replace("{tmp}", str(tmp_path)) in last, done.stderr[-1500:]
    assert "Traceback" not in done.stderr
    assert not (out / "manifest.json").exists()
    assert not out.exists() or not any(out.rglob("*.parquet"))


def test_rerun_with_different_settings_is_refused(cli, menyo_small, tmp_path):
    out = tmp_path / "emb"
    cli("precompute-embeddings", "--input", str(menyo_small), "--output", str(out), *COMMON, "--max-rows", "20",
        "--num-shards", "2", "--shard-index", "0", check=True)
    done = cli("precompute-embeddings", "--input", str(menyo_small), "--output", str(out), *COMMON,
               "--max-rows", "20", "--num-shards", "2", "--shard-index", "1", "--dtype", "float32")
    assert done.returncode != 0 and "different settings (dtype)" in done.stderr


def test_readers_reject_a_folder_without_manifest(tmp_path):
    from distil_jobs.artifacts import require_artifact
    from distil_jobs.errors import DistilError

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part.parquet").write_bytes(b"x")
    with pytest.raises(DistilError, match=r"has no manifest\.json"):
        require_artifact(str(tmp_path))


def test_cli_help_lists_every_option():
    done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", "precompute-embeddings", "--help"],
                          capture_output=True, text=True, check=True)
    for flag in ("--input", "--pair-column", "--output-type", "--layers", "--num-shards", "--push-every",
                 "--skip-empty", "--finalize", "--dry-run", "--config"):
        assert flag in done.stdout


def test_plain_transformers_teacher_pools_like_its_sentence_transformers_twin(cli, menyo_small, minilm_path, tmp_path):
    import shutil

    plain = tmp_path / "plain-minilm"
    shutil.copytree(minilm_path, plain, ignore=shutil.ignore_patterns("modules.json", "1_Pooling", "*sentence*"))
    st_out, hf_out = tmp_path / "st", tmp_path / "hf"
    base = ["--input", str(menyo_small), "--text-column", "en", "--max-rows", "30", "--max-length", "64",
            "--dtype", "float32"]
    cli("precompute-embeddings", *base, "--output", str(st_out), "--teacher", minilm_path,
        "--output-type", "pre_dense", check=True)
    cli("precompute-embeddings", *base, "--output", str(hf_out), "--teacher", str(plain), "--pooling", "mean", check=True)
    a = np.asarray(load_rows(st_out)["teacher_embedding_pre_dense"])
    b = np.asarray(load_rows(hf_out)["teacher_embedding_final"])
    np.testing.assert_allclose(a, b, atol=1e-4)
