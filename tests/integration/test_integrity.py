"""Artifact integrity: a job never publishes wrong rows or broken weights with exit 0, and nothing
downstream accepts a damaged artifact. Each case is what a careless (or hostile) user does:
flip bytes in a chunk, edit a manifest, swap the input under a resumed run, leave a killed copy's
temporary file, feed NaN targets or a learning rate that diverges, give text that is not text."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from train_helpers import STUDENT, make_targets

from tests.conftest import head_jsonl

PRECOMPUTE = ["precompute-embeddings", "--teacher", "minilm", "--text-column", "en", "--pair-column", "yo",
              "--max-length", "32", "--chunk-rows", "20", "--dtype", "float32"]


@pytest.fixture(scope="module")
def targets(tmp_path_factory, data_path) -> Path:
    from tests.conftest import run_cli

    return make_targets(run_cli, data_path, tmp_path_factory.mktemp("targets"), rows=60)


def train(cli, targets: Path, out: Path, *extra: str, check: bool = False):
    return cli("train-student", *STUDENT, "--max-steps", "2", "--targets", str(targets), "--output", str(out), *extra,
               check=check)


def assert_refused(done, code: int, *words: str, out: Path | None = None) -> None:
    assert done.returncode == code, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), done.stderr[-2000:]
    for w in words:
        assert w in last, last
    assert "Traceback" not in done.stderr and "terminate called" not in done.stderr
    if out is not None:
        assert not (out / "manifest.json").exists() and not (out / "final").exists()


def rewrite_manifest_entries(folder: Path) -> None:
    """Make the manifest agree with the files again: how a careful forger (or a buggy tool) hides an edit."""
    from distil_jobs.artifacts import open_location
    from distil_jobs.artifacts.manifest import file_entries

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = file_entries(open_location(str(folder)), [f["path"] for f in manifest["files"]])
    (folder / "manifest.json").write_text(json.dumps(manifest))


def chunks(folder: Path) -> list[Path]:
    return sorted((folder / "data").glob("part-*.parquet"))


# ---------------------------------------------------------------- S3: checksums are checked on read

def test_flipped_bytes_in_a_chunk_are_named_and_nothing_trains_on_them(cli, targets, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(targets, bad)
    part = chunks(bad)[-1]
    data = bytearray(part.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = bytes(b ^ 0x55 for b in data[len(data) // 3: len(data) // 3 + 64])
    part.write_bytes(data)

    check = cli("verify", str(bad))
    assert check.returncode == 1 and f"bad: {part}" in check.stderr and "does not match the sha256" in check.stderr
    assert_refused(train(cli, bad, tmp_path / "s"), 2, part.name, "sha256", out=tmp_path / "s")
    assert cli("verify", str(targets)).returncode == 0  # the untouched original still verifies


@pytest.mark.parametrize("edit", ["rows", "dims"])
def test_a_hand_edited_manifest_is_refused(cli, targets, tmp_path, edit):
    bad = tmp_path / "bad"
    shutil.copytree(targets, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    if edit == "rows":
        manifest["rows"] -= 20
    else:
        manifest["extra"]["embedding_columns"]["teacher_embedding_final"] = 768
    (bad / "manifest.json").write_text(json.dumps(manifest))
    expected = "promises 40 rows but the data holds 60" if edit == "rows" else "with 768 dims, the data has 384"
    assert expected in cli("verify", str(bad)).stderr
    assert_refused(train(cli, bad, tmp_path / "s"), 2, expected, out=tmp_path / "s")


def test_a_chunk_deleted_after_the_manifest_is_named(cli, targets, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(targets, bad)
    gone = chunks(bad)[0]
    gone.unlink()
    assert_refused(train(cli, bad, tmp_path / "s"), 2, gone.name, "listed in the manifest but missing",
                   out=tmp_path / "s")
    assert cli("verify", str(bad)).returncode == 1


# ---------------------------------------------------------------- S2: non-finite values

def test_nan_targets_are_refused_at_load_naming_the_row(cli, targets, tmp_path):
    bad = tmp_path / "nan"
    shutil.copytree(targets, bad)
    part = chunks(bad)[0]
    table = pq.read_table(part)
    emb = np.asarray(table.column("teacher_embedding_final").combine_chunks().flatten()).reshape(table.num_rows, -1)
    emb = emb.copy()
    emb[23, 7] = np.inf
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
    pq.write_table(table.set_column(table.schema.get_field_index("teacher_embedding_final"),
                                    "teacher_embedding_final", col), part)
    rewrite_manifest_entries(bad)  # the checksums agree: only the values are wrong
    assert_refused(train(cli, bad, tmp_path / "s"), 2, "hold NaN or inf (first at row_idx 23)", out=tmp_path / "s")


def test_a_diverging_run_exits_1_naming_the_step_and_publishes_nothing(cli, targets, tmp_path):
    out = tmp_path / "s"
    done = train(cli, targets, out, "--lr", "1e30", "--save-steps", "1", "--max-steps", "4")
    assert_refused(done, 1, "training diverged at step", "--skip-nonfinite", out=out)
    assert (out / "checkpoints" / "step-1").is_dir()  # the last good step stays, for whoever wants to look
    # Tolerating bad steps cannot launder a broken student: the final check still refuses it.
    done = train(cli, targets, out, "--lr", "1e30", "--save-steps", "1", "--max-steps", "4", "--skip-nonfinite", "9")
    assert_refused(done, 1, "not finite", out=out)


def test_manifests_are_strict_json():
    from distil_jobs.artifacts.manifest import new_manifest

    with pytest.raises(ValueError):
        new_manifest("student-model", "train-student", {}, [], 1, final_metrics={"dev_mse": float("nan")}).to_json()


# ---------------------------------------------------------------- S4: the input's content, not its name

def test_a_resume_over_changed_input_is_refused_naming_it(cli, data_path, tmp_path):
    src = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "in.jsonl", 60)
    out = tmp_path / "emb"
    args = [*PRECOMPUTE, "--input", str(src), "--output", str(out)]
    cli(*args, check=True)
    # A run killed after two chunks: the last chunk, the shard marker and the manifest are not there yet.
    for f in [out / "manifest.json", *out.glob("_shards/shard-*"), chunks(out)[-1]]:
        f.unlink()
    original = src.read_bytes()
    head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "other.jsonl", 120)
    src.write_bytes(b"".join((tmp_path / "other.jsonl").read_bytes().splitlines(keepends=True)[60:]))
    assert_refused(cli(*args), 2, "the content of --input changed since this run started", out=out)

    src.write_bytes(original)
    os.utime(src, (time.time() + 100, time.time() + 100))  # touched, same bytes: still the same input
    cli(*args, check=True)
    rows = pq.read_table(chunks(out)).to_pydict()
    assert rows["row_idx"] == list(range(60))
    assert rows["en"] == [json.loads(line)["en"] for line in original.decode().splitlines()]
    assert cli("verify", str(out)).returncode == 0


# ---------------------------------------------------------------- S5: temporary files never count

def test_a_killed_copy_s_temporary_chunk_is_never_counted(cli, data_path, tmp_path):
    def blank_some(row: dict) -> dict:
        return row | {"en": "" if row["id"].endswith("7") else row["en"]}

    src = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "in.jsonl", 60, blank_some)
    out = tmp_path / "emb"
    args = [*PRECOMPUTE, "--input", str(src), "--output", str(out), "--skip-empty"]
    cli(*args, check=True)
    expected = json.loads((out / "manifest.json").read_text())
    # Killed between copy and rename, an hour ago: a whole chunk under its temporary name.
    (out / "manifest.json").unlink()
    for f in out.glob("_shards/shard-*"):
        f.unlink()
    stale = out / "data" / f".tmp-{'0' * 32}-{chunks(out)[0].name}"
    shutil.copyfile(chunks(out)[0], stale)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    cli(*args, check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == expected["rows"] < 60
    assert manifest["extra"]["skipped_empty"] == expected["extra"]["skipped_empty"] == 60 - expected["rows"]
    assert not stale.exists()  # the resumed run swept it
    assert cli("verify", str(out)).returncode == 0


# ---------------------------------------------------------------- S1: text columns are text

@pytest.mark.parametrize("name, content, words", [
    ("latin1.csv", b"id,en,yo\n0,hello,bawo\n1,caf\xe9,kafe\n", ["not UTF-8", "line 3"]),
    ("lists.jsonl", b'{"en": ["a", "b"], "yo": "x"}\n', ["holds list", "--cast-text"]),
    ("numbers.jsonl", b'{"en": 3, "yo": "x"}\n{"en": 4, "yo": "y"}\n', ["holds int64", "--cast-text"]),
    ("flags.jsonl", b'{"en": true, "yo": "x"}\n', ["holds bool", "--cast-text"]),
])
def test_a_text_column_that_is_not_text_is_refused(cli, tmp_path, name, content, words):
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "emb"
    assert_refused(cli(*PRECOMPUTE, "--input", str(src), "--output", str(out)), 2, *words, out=out)
    assert not (out / "_shards").exists()  # refused before anything was claimed


def test_binary_text_is_decoded_or_refused_with_its_row(cli, tmp_path):
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    en = ["hello", "Ẹ kú àárọ̀", "good night"]
    pq.write_table(pa.table({"en": pa.array([t.encode() for t in en], pa.binary()), "yo": en}), good)
    pq.write_table(pa.table({"en": pa.array([b"ok", b"fine", b"caf\xe9"], pa.binary()), "yo": en}), bad)
    assert_refused(cli(*PRECOMPUTE, "--input", str(bad), "--output", str(tmp_path / "b")), 2,
                   "row 2 of column 'en'", "not UTF-8")
    cli(*PRECOMPUTE, "--input", str(good), "--output", str(tmp_path / "g"), check=True)
    table = pq.read_table(chunks(tmp_path / "g"))
    assert table.schema.field("en").type == pa.string() and table.column("en").to_pylist() == en


def test_cast_text_embeds_the_string_form_when_asked(cli, tmp_path):
    src = tmp_path / "numbers.jsonl"
    src.write_text("".join(json.dumps({"en": i, "yo": str(i)}) + "\n" for i in range(5)))
    cli(*PRECOMPUTE, "--input", str(src), "--output", str(tmp_path / "e"), "--cast-text", check=True)
    assert pq.read_table(chunks(tmp_path / "e")).column("en").to_pylist() == ["0", "1", "2", "3", "4"]


# ---------------------------------------------------------------- claims and kinds

def test_a_failed_start_does_not_block_its_corrected_rerun(cli, targets, tmp_path):
    out = tmp_path / "s"
    assert_refused(train(cli, targets, out, "--batch-size", "64"), 2, "too few for --batch-size 64", out=out)
    assert not (out / "_shards" / "run.json").exists()  # refused before the claim
    # A claim left by a crash that produced nothing (no checkpoint) yields to the corrected settings...
    (out / "_shards").mkdir(parents=True)
    (out / "_shards" / "run.json").write_text(json.dumps({"job": "train-student", "fingerprint": {"lr": -1}}))
    train(cli, targets, out, check=True)
    assert (out / "manifest.json").exists()


def test_another_job_s_artifact_is_never_passed_off_as_done(cli, targets, tmp_path):
    student = tmp_path / "s"
    train(cli, targets, student, check=True)
    src = targets.parent / "menyo20k" / "train.jsonl"
    assert_refused(cli(*PRECOMPUTE, "--input", str(src), "--output", str(student)), 2,
                   "already holds a 'student-model' artifact")
    assert_refused(train(cli, targets, targets), 2, "already holds a 'teacher-embeddings' artifact")
    half = tmp_path / "half"
    shutil.copytree(targets, half)
    (half / "manifest.json").unlink()
    assert_refused(train(cli, targets, half), 2, "holds a precompute-embeddings run")


# ---------------------------------------------------------------- cp and verify

def test_cp_copies_a_verified_artifact_and_resumes(cli, targets, tmp_path):
    dst = tmp_path / "copy"
    done = cli("cp", str(targets), str(dst))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (dst / "manifest.json").read_bytes() == (targets / "manifest.json").read_bytes()
    assert cli("verify", str(dst)).returncode == 0
    # An interrupted copy: one file and the manifest missing. The rerun sends only what is missing.
    (dst / "manifest.json").unlink()
    chunks(dst)[0].unlink()
    done = cli("cp", str(targets), str(dst))
    assert done.returncode == 0 and "1 file(s) sent" in done.stdout, done.stdout + done.stderr[-1000:]
    assert cli("verify", str(dst)).returncode == 0


def test_cp_refuses_a_damaged_source_and_publishes_no_manifest(cli, targets, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(targets, bad)
    part = chunks(bad)[0]
    part.write_bytes(part.read_bytes()[:-10])
    dst = tmp_path / "copy"
    assert_refused(cli("cp", str(bad), str(dst)), 2, part.name, "bytes")
    assert not (dst / "manifest.json").exists()


def test_cp_to_and_from_the_hub(targets, tmp_path, local_hub):
    from distil_jobs.artifacts.copy import copy_artifact
    from distil_jobs.artifacts.verify import verify_artifact
    from distil_jobs.data import read_table

    copy_artifact(str(targets), "hf://datasets/org/targets")
    assert verify_artifact("hf://datasets/org/targets").ok
    copy_artifact("hf://datasets/org/targets", str(tmp_path / "back"))
    assert read_table(str(tmp_path / "back")).equals(read_table(str(targets)))
    assert local_hub.commits[-1]["files"] == ["manifest.json"]  # the manifest is the last commit
