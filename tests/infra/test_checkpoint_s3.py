"""Checkpoints on the output's own store (real SeaweedFS): a run to s3:// killed after a checkpoint
resumes on a fresh, empty cache from the store; two "nodes" sharing no files train, lose a rank
(the survivor exits 75 after --dist-timeout instead of hanging) and resume from the store. Each
student equals the one of an uninterrupted run with a local output."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import head_jsonl

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROWS = 300
STEPS = 12


@pytest.fixture(scope="module")
def rows(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path_factory.mktemp("in") / "train.jsonl", ROWS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(rows: Path, output: str, *extra: str) -> list[str]:
    """A tiny online-teacher run: 2-layer MiniLM student, checkpoints at steps 4 and 8 (frozen word
    embeddings keep them small: no optimizer state for 30k x 384 weights)."""
    return [sys.executable, "-m", "distil_jobs.cli", "train-student", "--input", str(rows), "--text-column", "en",
            "--pair-column", "yo", "--teacher", "minilm", "--student", "minilm", "--student-layers", "0,1",
            "--max-length", "32", "--batch-size", "8", "--max-steps", str(STEPS), "--save-steps", "4",
            "--eval-steps", "0", "--log-steps", "1", "--freeze-word-embeddings", "--output", output, *extra]


def node_args(rows: Path, output: str, port: int, node: int) -> list[str]:
    return train_args(rows, output, "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1",
                      "--master-addr", "127.0.0.1", "--master-port", str(port), "--dist-timeout", "10")


def start(cmd: list[str], cache: Path) -> subprocess.Popen:
    # Its own cache folder per process: "nodes" that share no local files.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "DISTIL_CACHE": str(cache)})


def finish(procs: list[subprocess.Popen]) -> list[str]:
    errs = [p.communicate(timeout=600)[1] for p in procs]
    for p, err in zip(procs, errs, strict=True):
        assert p.returncode == 0, err[-4000:]
    return errs


def store(uri: str):
    from distil_jobs.artifacts import open_location
    from distil_jobs.train.checkpoint_store import CheckpointStore

    return CheckpointStore.of_output(open_location(uri))


def wait_for_checkpoint(uri: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.time() + 300
    while not store(uri).complete_steps():
        assert time.time() < deadline and all(p.poll() is None for p in procs), "no checkpoint reached the store"
        time.sleep(0.2)


def wait_for_step(cache: Path, uri: str, step: int, procs: list[subprocess.Popen]) -> None:
    """Until rank 0 (whose cache is `cache`) logged `step` in its metrics.jsonl."""
    import hashlib

    curve = cache / "runs" / hashlib.sha256(uri.encode()).hexdigest()[:16] / "metrics.jsonl"
    deadline = time.time() + 300
    while not (curve.exists() and any(json.loads(line).get("step", 0) >= step and "loss" in line
                                      for line in curve.read_text().splitlines() if line.endswith("}"))):
        assert time.time() < deadline and all(p.poll() is None for p in procs), f"step {step} was not reached"
        time.sleep(0.2)


def student_tensors(uri_or_dir: str) -> dict:
    from safetensors.torch import load

    from distil_jobs.artifacts import open_location

    return load(open_location(uri_or_dir).read_bytes("final/model.safetensors"))


def assert_same_student(got: str, expected: str) -> None:
    import torch

    a, b = student_tensors(got), student_tensors(expected)
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def losses(uri_or_dir: str) -> dict[int, float]:
    from distil_jobs.artifacts import open_location

    text = open_location(uri_or_dir).read_bytes("metrics.jsonl").decode()
    return {r["step"]: r["loss"] for r in map(json.loads, text.splitlines()) if "loss" in r}


def manifest(uri_or_dir: str) -> dict:
    from distil_jobs.artifacts import open_location

    return open_location(uri_or_dir).read_json("manifest.json")


def has_manifest(uri: str) -> bool:
    from distil_jobs.artifacts import open_location

    return open_location(uri).exists("manifest.json")


def assert_published_clean(cli, uri: str) -> None:
    """verify passes, and the output keeps its result, not the checkpoints."""
    checked = cli("verify", uri)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    loc = store(uri).loc
    loc.fs.invalidate_cache()  # this process listed the checkpoints while waiting for them
    # (SeaweedFS may keep empty folder entries; no object is left)
    assert store(uri).complete_steps() == [] and not [k for k, i in loc.fs.find(loc.path(), detail=True).items() if i["size"]]


def test_a_killed_run_resumes_from_the_store_on_an_empty_cache(s3_server, cli, rows, tmp_path):
    reference = tmp_path / "reference"
    done = cli(*train_args(rows, str(reference))[3:], env={"DISTIL_CACHE": str(tmp_path / "c0")})
    assert done.returncode == 0, done.stderr[-3000:]

    uri = s3_server.uri(f"student-{uuid.uuid4().hex[:8]}")
    first = start(train_args(rows, uri), tmp_path / "cache-a")
    wait_for_checkpoint(uri, [first])
    os.killpg(first.pid, signal.SIGKILL)  # the pod is gone, and its emptyDir cache with it
    first.communicate(timeout=60)
    newest = store(uri).complete_steps()[-1]
    assert newest < STEPS and not has_manifest(uri)

    resumed = finish([start(train_args(rows, uri), tmp_path / "cache-b")])[0]  # a fresh, empty cache
    assert f"pulling checkpoint step {newest} from {uri}/checkpoints" in resumed
    assert f"at step {newest}/{STEPS} (restart 1 of this run)" in resumed
    assert_same_student(uri, str(reference))
    assert losses(uri) == losses(str(reference))  # the curve before the kill travelled with the checkpoint
    assert manifest(uri)["extra"]["restarts"] == 1 and manifest(str(reference))["extra"]["restarts"] == 0
    assert_published_clean(cli, uri)


def test_two_nodes_without_shared_files_survive_a_lost_rank(s3_server, cli, rows, tmp_path):
    reference = str(tmp_path / "reference")  # the same two ranks with a local output
    port = free_port()
    finish([start(node_args(rows, reference, port, n), tmp_path / f"ref-{n}") for n in (0, 1)])

    uri = s3_server.uri(f"nodes-{uuid.uuid4().hex[:8]}")
    port = free_port()
    nodes = [start(node_args(rows, uri, port, n), tmp_path / f"a-{n}") for n in (0, 1)]
    wait_for_checkpoint(uri, nodes)
    wait_for_step(tmp_path / "a-0", uri, 5, nodes)  # training again, past the checkpoint's barriers
    # Node 1 stops answering (a hung host keeps its connections open): node 0 must not wait forever.
    os.killpg(nodes[1].pid, signal.SIGSTOP)
    try:
        _, err = nodes[0].communicate(timeout=300)
    finally:
        os.killpg(nodes[1].pid, signal.SIGKILL)
        nodes[1].communicate(timeout=60)
    assert nodes[0].returncode == 75, err[-3000:]
    assert "a peer rank was lost" in err
    assert not has_manifest(uri)

    newest = store(uri).complete_steps()[-1]
    port = free_port()  # the whole group restarts, each node on a fresh cache
    errs = finish([start(node_args(rows, uri, port, n), tmp_path / f"b-{n}") for n in (0, 1)])
    for err in errs:
        assert f"pulling checkpoint step {newest}" in err and f"at step {newest}/{STEPS}" in err
    assert_same_student(uri, reference)
    assert manifest(uri)["extra"]["world_size"] == 2 and manifest(uri)["extra"]["restarts"] == 1
    assert_published_clean(cli, uri)
