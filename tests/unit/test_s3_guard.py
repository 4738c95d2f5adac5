"""S3Guard's retry policy on a scripted filesystem: what is retried, for how long, what a retry that
finds its own earlier write concludes, and the one-line errors. The real-server outage tests are in
tests/infra/test_s3_faults.py; these cover the outcomes a live server cannot be made to produce
on demand (a write that landed but whose answer was lost)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import Any

import pytest

pytest.importorskip("s3fs")

from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, NoCredentialsError

from distil_jobs.artifacts.s3 import S3Guard, is_transient, retry_seconds
from distil_jobs.errors import DistilError, JobFault

ENDPOINT = "http://127.0.0.1:8333"


def refused() -> Exception:
    return EndpointConnectionError(endpoint_url=f"{ENDPOINT}/b/k")


def lost() -> Exception:
    return ConnectionClosedError(endpoint_url=f"{ENDPOINT}/b/k")


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


class Scripted:
    """A filesystem whose calls raise the scripted exceptions in turn, then succeed."""

    def __init__(self, *failures: Exception, stored: bytes | None = None) -> None:
        self.failures = list(failures)
        self.stored = stored
        self.calls: list[str] = []

    def _next(self, name: str) -> None:
        self.calls.append(name)
        if self.failures:
            raise self.failures.pop(0)

    def exists(self, path: str) -> bool:
        self._next("exists")
        return True

    def rm(self, path: str) -> None:
        self._next("rm")

    def mv(self, a: str, b: str) -> None:
        self._next("mv")

    def pipe_file(self, path: str, data: bytes, mode: str = "overwrite") -> None:
        self._next("pipe_file")

    def cat_file(self, path: str) -> bytes:
        self.calls.append("cat_file")
        if self.stored is None:
            raise FileNotFoundError(path)
        return self.stored


def guard(fs: Any, budget: float = 5.0) -> Any:
    return S3Guard(fs, ENDPOINT, budget)


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr("distil_jobs.artifacts.s3._FIRST_DELAY_S", 0.01)


def test_a_transient_failure_is_retried_until_the_call_succeeds(caplog):
    fs = Scripted(refused(), lost(), client_error("SlowDown", 503))
    assert guard(fs).exists("b/k") is True
    assert fs.calls == ["exists"] * 4
    lines = [r.getMessage() for r in caplog.records]
    assert [re.search(r"retry (\d) in", line)[1] for line in lines] == ["1", "2", "3"]  # type: ignore[index]
    assert all(line.startswith(f"S3 at {ENDPOINT}: exists failed (") for line in lines)


def test_an_outage_ends_in_one_line_naming_the_endpoint_within_the_bound():
    fs = Scripted(*[refused() for _ in range(1000)])
    g = guard(fs, budget=1.0)
    started = time.monotonic()
    with pytest.raises(JobFault) as caught:
        g.exists("b/k")
    assert 1.0 <= time.monotonic() - started < 2.0
    assert caught.value.exit_code == 1
    assert str(caught.value).startswith(f"S3 at {ENDPOINT} unreachable for 1 s (")
    assert str(caught.value).endswith("then rerun the same command to resume") and "\n" not in str(caught.value)
    # Clean-up calls after the give-up fail at once with the same line, not after another bound.
    tries = len(fs.calls)
    started = time.monotonic()
    with pytest.raises(JobFault, match="unreachable for 1 s"):
        g.rm("b/_tmp/x")
    assert time.monotonic() - started < 0.5 and len(fs.calls) == tries + 1


def test_a_call_that_is_not_idempotent_is_not_retried():
    fs = Scripted(lost())
    with pytest.raises(JobFault, match="failed during mv, which is not retried"):
        guard(fs).mv("b/a", "b/c")
    assert fs.calls == ["mv"]


def test_other_errors_pass_through_at_once():
    fs = Scripted(FileNotFoundError("b/k"))
    with pytest.raises(FileNotFoundError):
        guard(fs).exists("b/k")
    assert fs.calls == ["exists"]


def test_an_exclusive_create_whose_answer_was_lost_is_ours_when_the_bytes_match():
    """The first put landed but its answer was lost; the retry gets 412. That is our own write."""
    fs = Scripted(lost(), FileExistsError("b/manifest.json"), stored=b"ours")
    guard(fs).pipe_file("b/manifest.json", b"ours", mode="create")
    assert fs.calls == ["pipe_file", "pipe_file", "cat_file"]


def test_an_exclusive_create_lost_to_another_writer_still_reports_exists():
    fs = Scripted(lost(), FileExistsError("b/manifest.json"), stored=b"theirs")
    with pytest.raises(FileExistsError):
        guard(fs).pipe_file("b/manifest.json", b"ours", mode="create")
    # Without an earlier ambiguous attempt, 412 is a plain loss: no read-back.
    fs = Scripted(FileExistsError("b/manifest.json"), stored=b"ours")
    with pytest.raises(FileExistsError):
        guard(fs).pipe_file("b/manifest.json", b"ours", mode="create")
    assert fs.calls == ["pipe_file"]


def test_a_delete_whose_answer_was_lost_is_done():
    fs = Scripted(lost(), FileNotFoundError("b/_tmp/x"))
    guard(fs).rm("b/_tmp/x")
    assert fs.calls == ["rm", "rm"]


def test_credential_problems_are_the_users_to_fix():
    with pytest.raises(DistilError) as caught:
        guard(Scripted(NoCredentialsError())).exists("b/k")
    assert caught.value.exit_code == 2 and "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in str(caught.value)
    with pytest.raises(DistilError, match="access denied to s3://b/k") as denied:
        guard(Scripted(PermissionError("Forbidden"))).exists("b/k")
    assert denied.value.exit_code == 2


def test_what_counts_as_transient():
    assert is_transient(refused()) and is_transient(lost()) and is_transient(ConnectionResetError())
    assert is_transient(client_error("InternalError", 500)) and is_transient(client_error("SlowDown", 503))
    assert not is_transient(client_error("NoSuchKey", 404)) and not is_transient(FileNotFoundError("x"))
    wrapped = OSError(5, "Service Unavailable")
    wrapped.__cause__ = client_error("ServiceUnavailable", 503)  # how s3fs reports a 5xx
    assert is_transient(wrapped)


def test_the_bound_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("DISTIL_S3_RETRY_SECONDS", raising=False)
    assert retry_seconds() == 60
    monkeypatch.setenv("DISTIL_S3_RETRY_SECONDS", "2.5")
    assert retry_seconds() == 2.5
    monkeypatch.setenv("DISTIL_S3_RETRY_SECONDS", "soon")
    with pytest.raises(DistilError, match="DISTIL_S3_RETRY_SECONDS='soon' is not a number"):
        retry_seconds()


@pytest.mark.parametrize(("endpoint", "where", "fix"), [
    (None, "the default AWS endpoint", "AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a server other than AWS)"),
    ("http://127.0.0.1:9", "http://127.0.0.1:9", "AWS_SECRET_ACCESS_KEY")])
def test_s3_without_credentials_is_one_line_naming_what_to_set(tmp_path, endpoint, where, fix):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # No config files and no instance metadata: nothing on this machine may supply credentials.
    env.update(AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", DISTIL_S3_RETRY_SECONDS="1")
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    done = subprocess.run([sys.executable, "-m", "distil_jobs.cli", "inspect", "s3://distil/emb"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: no S3 credentials for s3://distil/emb")
    assert f" at {where} (Unable to locate credentials): set AWS_ACCESS_KEY_ID and {fix}" in line
    assert line.endswith(fix)
