"""An S3 server that dies mid-job (SeaweedFS on 127.0.0.1, stopped and restarted by the tests).

While precompute-embeddings uploads its chunks, and while train-student uploads its student, the
server stops. The job retries for DISTIL_S3_RETRY_SECONDS, then fails with exit 1 and one line
naming the endpoint; it leaves no manifest; the same command, once the server is back, finishes
the job with every row exactly once.

Timing: the job is frozen (SIGSTOP) the moment the trigger is seen, the server is stopped
completely, then the job goes on (SIGCONT). Without the freeze, a fast job could finish during
the few seconds SeaweedFS takes to shut down, and the test would pass or fail by chance.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import head_jsonl
from tests.infra.test_s3_artifacts import COMMON, ROWS, assert_same_rows, s3_rows

pytestmark = pytest.mark.server

RETRY = {"DISTIL_S3_RETRY_SECONDS": "3"}
STUDENT = ["--student", "minilm", "--student-layers", "0,1", "--max-length", "32", "--batch-size", "16",
           "--max-steps", "2"]


@pytest.fixture(scope="module")
def rows_300(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path_factory.mktemp("in") / "train.jsonl", ROWS)


@contextlib.contextmanager
def server_back(server) -> Iterator[None]:
    """Whatever the test asserts, the session's server runs again afterwards for the other tests."""
    try:
        yield
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.start()  # a no-op when it already runs


def run_through_outage(server, args: list[str], trigger: Callable[[], bool], folder: Path,
                       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `distil-jobs ARGS`; once `trigger()` holds, stop the server under it. Returns the finished run."""
    out, err = folder / "stdout", folder / "stderr"
    with open(out, "w") as so, open(err, "w") as se:
        proc = subprocess.Popen([sys.executable, "-m", "distil_jobs.cli", *args], stdout=so, stderr=se, text=True,
                                env={**os.environ, **RETRY, **(env or {})}, start_new_session=True)
        try:
            deadline = time.time() + 300
            while proc.poll() is None and time.time() < deadline and not trigger():
                time.sleep(0.02)
            assert proc.poll() is None, f"the job ended before the outage:\n{err.read_text()[-2000:]}"
            os.killpg(proc.pid, signal.SIGSTOP)
            try:
                server.stop()
            finally:
                os.killpg(proc.pid, signal.SIGCONT)
            proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return subprocess.CompletedProcess(args, proc.returncode, out.read_text(), err.read_text())


def assert_one_line_fault(done: subprocess.CompletedProcess[str], server) -> None:
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: S3 at {server.endpoint} unreachable for "), done.stderr[-3000:]
    assert "rerun the same command to resume" in last
    assert "Traceback" not in done.stderr
    assert "retry 1 in" in done.stderr  # it did retry before giving up
    assert server.secret_key not in done.stderr + done.stdout


def test_precompute_survives_a_server_that_dies_mid_upload(s3_server, cli, rows_300, tmp_path):
    from distil_jobs.artifacts import open_location

    reference = tmp_path / "local"
    cli("precompute-embeddings", "--input", str(rows_300), "--output", str(reference), *COMMON, "--chunk-rows", "100",
        check=True)
    uri = s3_server.uri(f"outage-{uuid.uuid4().hex[:8]}")
    args = ["precompute-embeddings", "--input", str(rows_300), "--output", uri, *COMMON, "--chunk-rows", "20",
            "--batch-size", "8"]
    loc = open_location(uri)
    with server_back(s3_server):
        done = run_through_outage(s3_server, args, lambda: bool(loc.listdir("data")), tmp_path)
        assert_one_line_fault(done, s3_server)
        s3_server.start()

    published = loc.listdir("data")
    assert 1 <= len(published) < ROWS // 20, "the outage should land mid-run"
    assert not loc.exists("manifest.json")
    resumed = cli(*args, env=RETRY, check=True)
    assert "already published: skipped" in resumed.stderr
    expected = pq.read_table(sorted((reference / "data").glob("*.parquet"))).to_pydict()
    assert_same_rows(s3_rows(uri), expected)
    assert json.loads(loc.read_bytes("manifest.json"))["rows"] == ROWS
    # The upload the outage cut short left a temporary object; the resumed run swept it.
    assert [k for k, info in loc.fs.find(loc.path("_tmp"), detail=True).items() if info["size"] > 0] == []


def test_train_student_survives_a_server_that_dies_while_publishing(s3_server, cli, data_path, tmp_path):
    from distil_jobs.artifacts import open_location

    pairs = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "pairs.jsonl", 64)
    targets = tmp_path / "targets"
    cli("precompute-embeddings", "--input", str(pairs), "--output", str(targets), *COMMON, "--dtype", "float32",
        check=True)
    uri = s3_server.uri(f"student-{uuid.uuid4().hex[:8]}")
    # The student is staged in a fresh `distil-student-*` folder just before the upload: a private
    # TMPDIR makes that folder the trigger. DISTIL_CACHE keeps the run's checkpoints for the rerun.
    staging = tmp_path / "tmp"
    staging.mkdir()
    env = {"TMPDIR": str(staging), "DISTIL_CACHE": str(tmp_path / "cache")}
    args = ["train-student", "--targets", str(targets), *STUDENT, "--output", uri]
    loc = open_location(uri)
    with server_back(s3_server):
        done = run_through_outage(s3_server, args, lambda: any(staging.glob("distil-student-*")), tmp_path, env)
        assert_one_line_fault(done, s3_server)
        s3_server.start()

    assert not loc.exists("manifest.json")
    cli(*args, env={**RETRY, **env}, check=True)
    manifest = json.loads(loc.read_bytes("manifest.json"))
    assert manifest["kind"] == "student-model"
    listed = [f["path"] for f in manifest["files"]]
    assert "final/model.safetensors" in listed
    for rel in listed:
        assert loc.exists(rel), rel
        assert loc.size(rel) == next(f["bytes"] for f in manifest["files"] if f["path"] == rel)
