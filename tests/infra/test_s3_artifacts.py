"""Artifacts on a real S3 server (SeaweedFS on 127.0.0.1, started by scripts/s3-up.sh).

precompute-embeddings writes to s3://bucket/prefix exactly what it writes to a folder, resumes
after SIGKILL, creates its manifest exclusively, and fails in one line on bad credentials.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import head_jsonl

pytestmark = pytest.mark.server

COMMON = ["--teacher", "minilm", "--text-column", "en", "--pair-column", "yo", "--max-length", "32"]
ROWS = 300


@pytest.fixture(scope="module")
def menyo_rows(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path_factory.mktemp("in") / "train.jsonl", ROWS)


@pytest.fixture(scope="module")
def local_reference(menyo_rows: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """The rows of a plain local run: what every S3 run must reproduce."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("local") / "emb"
    run_cli("precompute-embeddings", "--input", str(menyo_rows), "--output", str(out), *COMMON,
            "--chunk-rows", "100", check=True)
    return pq.read_table(sorted((out / "data").glob("*.parquet"))).to_pydict()


def s3_rows(uri: str) -> dict[str, list]:
    from distil_jobs.artifacts import open_location

    loc = open_location(uri)
    parts = [pq.read_table(loc.fs.open(loc.path(f"data/{n}"), "rb")) for n in loc.listdir("data")]
    return pa.concat_tables(parts).to_pydict()


def assert_same_rows(got: dict[str, list], expected: dict[str, list]) -> None:
    assert got["row_idx"] == expected["row_idx"] == list(range(ROWS))  # every row once, in order
    assert got["id"] == expected["id"] and got["en"] == expected["en"] and got["yo"] == expected["yo"]
    np.testing.assert_allclose(np.asarray(got["teacher_embedding_final"], dtype=np.float32),
                               np.asarray(expected["teacher_embedding_final"], dtype=np.float32), atol=2e-3)


def test_precompute_to_s3_writes_the_rows_of_a_local_run(s3_server, cli, menyo_rows, local_reference):
    uri = s3_server.uri(f"emb-{uuid.uuid4().hex[:8]}")
    done = cli("precompute-embeddings", "--input", str(menyo_rows), "--output", uri, *COMMON,
               "--chunk-rows", "100", check=True)
    assert_same_rows(s3_rows(uri), local_reference)

    shown = cli("inspect", uri, check=True)
    manifest = json.loads(shown.stdout)
    assert manifest["rows"] == ROWS and manifest["kind"] == "teacher-embeddings"
    assert sorted(f["path"] for f in manifest["files"]) == [
        "data/part-0000000000-0000000100.parquet", "data/part-0000000100-0000000200.parquet",
        "data/part-0000000200-0000000300.parquet"]
    # No temporary upload is left behind (SeaweedFS may keep an empty '_tmp/' folder marker).
    from distil_jobs.artifacts import open_location

    loc = open_location(uri)
    assert [k for k, info in loc.fs.find(loc.path("_tmp"), detail=True).items() if info["size"] > 0] == []
    # Secrets never reach logs or the manifest.
    for text in (done.stdout, done.stderr, shown.stdout):
        assert s3_server.secret_key not in text


def test_killed_precompute_on_s3_resumes_and_readers_wait_for_the_manifest(s3_server, cli, menyo_rows,
                                                                          local_reference):
    from distil_jobs.artifacts import open_location

    uri = s3_server.uri(f"kill-{uuid.uuid4().hex[:8]}")
    args = ["precompute-embeddings", "--input", str(menyo_rows), "--output", uri, *COMMON, "--chunk-rows", "30",
            "--batch-size", "8"]
    proc = subprocess.Popen([sys.executable, "-m", "distil_jobs.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    loc = open_location(uri)
    deadline = time.time() + 300
    while time.time() < deadline and len(loc.listdir("data")) < 2 and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    published = len(loc.listdir("data"))
    assert 2 <= published < ROWS // 30, "the kill should land mid-run"
    assert not loc.exists("manifest.json")

    reader = cli("inspect", uri)
    assert reader.returncode == 2 and "has no manifest.json" in reader.stderr
    assert len(reader.stderr.strip().splitlines()) == 1

    cli(*args, check=True)
    assert_same_rows(s3_rows(uri), local_reference)
    assert json.loads(loc.read_bytes("manifest.json"))["rows"] == ROWS


def test_manifest_creation_on_s3_has_exactly_one_winner(s3_server):
    """Location.create_exclusive relies on S3 conditional writes (If-None-Match: *): of 8 racing
    writers exactly one wins, and the object holds the winner's bytes."""
    from distil_jobs.artifacts import open_location

    loc = open_location(s3_server.uri(f"race-{uuid.uuid4().hex[:8]}"))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: loc.create_exclusive("manifest.json", f"writer {i}".encode()), range(8)))
    assert results.count(True) == 1
    assert loc.read_bytes("manifest.json") == f"writer {results.index(True)}".encode()
    assert loc.create_exclusive("manifest.json", b"late") is False


def test_reader_rejects_an_s3_prefix_without_manifest(s3_server):
    from distil_jobs.artifacts import open_location, require_artifact
    from distil_jobs.errors import DistilError

    uri = s3_server.uri(f"partial-{uuid.uuid4().hex[:8]}")
    open_location(uri).put_bytes("data/part-0.parquet", b"not finished")
    with pytest.raises(DistilError, match=r"has no manifest\.json"):
        require_artifact(uri, "teacher-embeddings")
    with pytest.raises(DistilError, match="does not exist"):
        require_artifact(s3_server.uri("never-written"), "teacher-embeddings")


@pytest.mark.parametrize("variable", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_wrong_credentials_give_a_one_line_error(s3_server, cli, menyo_rows, variable):
    wrong = "wrong" + uuid.uuid4().hex
    done = cli("precompute-embeddings", "--input", str(menyo_rows), "--output", s3_server.uri("denied"),
               *COMMON, env={variable: wrong})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: access denied to s3://distil/denied")
    assert "AWS_SECRET_ACCESS_KEY" in lines[-1]
    assert "Traceback" not in done.stderr
    assert wrong not in done.stderr + done.stdout and s3_server.secret_key not in done.stderr + done.stdout


def test_unreachable_endpoint_gives_a_one_line_error(s3_server, cli, menyo_rows):
    """Retried for DISTIL_S3_RETRY_SECONDS (a server may be restarting), then exit 1: not a usage error."""
    done = cli("inspect", s3_server.uri("x"), env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                                                   "DISTIL_S3_RETRY_SECONDS": "1"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: S3 at http://127.0.0.1:9 unreachable for 1 s")
    assert "Traceback" not in done.stderr


def test_s3_up_script_keeps_keys_out_of_its_output_and_logs(s3_server):
    """The script prints where the server is, never the credentials."""
    env_file = s3_server.dir / "s3.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert s3_server.secret_key in env_file.read_text()
    log = (s3_server.dir / "weed.log").read_text()
    assert s3_server.secret_key not in log
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint


def test_cp_moves_an_artifact_to_s3_and_back_verified(s3_server, cli, menyo_rows, local_reference, tmp_path):
    """local → s3 → local with `distil-jobs cp`: same manifest bytes, every file verified on each hop;
    a flipped byte on S3 is named by `verify` and stops the copy back."""
    from distil_jobs.artifacts import open_location

    local = tmp_path / "emb"
    cli("precompute-embeddings", "--input", str(menyo_rows), "--output", str(local), *COMMON, "--chunk-rows", "100",
        check=True)
    uri = s3_server.uri(f"cp-{uuid.uuid4().hex[:8]}")
    cli("cp", str(local), uri, check=True)
    assert cli("verify", uri).returncode == 0
    cli("cp", uri, str(tmp_path / "back"), check=True)
    assert (tmp_path / "back" / "manifest.json").read_bytes() == (local / "manifest.json").read_bytes()
    assert_same_rows(pq.read_table(sorted((tmp_path / "back" / "data").glob("*.parquet"))).to_pydict(),
                     local_reference)

    loc = open_location(uri)
    rel = "data/part-0000000100-0000000200.parquet"
    data = bytearray(loc.read_bytes(rel))
    data[100] ^= 0xFF
    loc.put_bytes(rel, bytes(data))
    check = cli("verify", uri)
    assert check.returncode == 1 and rel in check.stderr
    again = cli("cp", uri, str(tmp_path / "again"))
    assert again.returncode == 2 and rel in again.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "again" / "manifest.json").exists()
