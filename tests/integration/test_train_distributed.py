"""Several processes on one CPU machine (gloo): DeepSpeed ZeRO 0/2/3 with 2 ranks (our own
spawner and torchrun), and two "nodes" started as two separate commands on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import STUDENT, losses, make_targets

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def targets(tmp_path_factory, data_path) -> Path:
    from tests.conftest import run_cli

    return make_targets(run_cli, data_path, tmp_path_factory.mktemp("targets"), rows=80)


@pytest.fixture(scope="module", autouse=True)
def extension_cache(tmp_path_factory):
    # DeepSpeed compiles its CPU comm op once (~40 s); keep the user's cache if there is one.
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "distil-jobs" / "torch_extensions"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args(targets: Path, out: Path, *extra: str) -> list[str]:
    return ["train-student", "--targets", str(targets), *STUDENT, "--batch-size", "8", "--max-steps", "4",
            "--lr", "3e-4", "--dev-fraction", "0.1", "--eval-steps", "0", "--save-steps", "2", "--output", str(out),
            "--master-port", str(free_port()), *extra]


def check_run(out: Path, world: int, deepspeed: bool) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "student-model"
    assert manifest["extra"]["world_size"] == world and manifest["extra"]["deepspeed"] is deepspeed
    ckpt = out / "checkpoints" / "step-2"
    assert {f"rng-rank{r}.pt" for r in range(world)} <= {p.name for p in ckpt.iterdir()}
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(out / "final"), device="cpu")
    assert model.encode(["e ku aaro"]).shape == (1, 384)
    return losses(out)


@pytest.mark.parametrize("stage", [0, 2])
def test_deepspeed_zero_with_two_spawned_ranks_trains_and_saves(cli, targets, tmp_path, tmp_path_factory, stage):
    out = tmp_path / f"zero{stage}"
    done = cli(*args(targets, out, "--nproc-per-node", "2", "--deepspeed-stage", str(stage)))
    assert done.returncode == 0, done.stderr[-4000:]
    assert "launcher for 2 local rank(s)" in done.stderr and "rank 1/2" in done.stderr
    (tmp_path_factory.getbasetemp() / f"losses-zero{stage}.json").write_text(json.dumps(check_run(out, 2, True)))


def test_deepspeed_zero3_under_torchrun_matches_zero0_and_2(targets, tmp_path, tmp_path_factory):
    out = tmp_path / "zero3"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "distil_jobs.cli", *args(targets, out, "--deepspeed-stage", "3")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-4000:]
    assert "rendezvous [torchrun]" in done.stderr
    zero3 = check_run(out, 2, True)
    for stage in (0, 2):  # fp32 ZeRO stages shard state differently but compute the same steps
        other = tmp_path_factory.getbasetemp() / f"losses-zero{stage}.json"
        if other.exists():
            ref = {int(k): v for k, v in json.loads(other.read_text()).items()}
            assert zero3 == pytest.approx(ref, rel=1e-4)


def test_two_nodes_as_two_commands_on_loopback(targets, tmp_path):
    out = tmp_path / "two-nodes"
    port = free_port()
    base = [sys.executable, "-m", "distil_jobs.cli", *args(targets, out, "--nnodes", "2", "--master-addr",
                                                            "127.0.0.1")]
    base[base.index("--master-port") + 1] = str(port)
    nodes = [subprocess.Popen([*base, "--node-rank", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=os.environ.copy()) for i in (0, 1)]
    results = [p.communicate(timeout=900) for p in nodes]
    for p, (_, err) in zip(nodes, results, strict=True):
        assert p.returncode == 0, err[-4000:]
    assert "rank 1/2 (local 0), node 1/2" in results[1][1]
    check_run(out, 2, False)
