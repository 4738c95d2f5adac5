"""hf:// reads against a real Hub protocol server: a local olah mirror serving git repos."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import head_jsonl
from tests.integration.test_precompute import load_rows

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.server


def git_repo(folder: Path) -> None:
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"],
                ["-c", "user.email=ci@localhost", "-c", "user.name=ci", "commit", "-qm", "init"]):
        subprocess.run(["git", *cmd], cwd=folder, check=True)


@pytest.fixture(scope="module")
def hub_mirror(tmp_path_factory, minilm_path, data_path):
    base = tmp_path_factory.mktemp("hub")
    model = base / "mirrors" / "models" / "sentence-transformers" / "all-MiniLM-L6-v2"
    shutil.copytree(minilm_path, model)
    git_repo(model)
    dataset = base / "mirrors" / "datasets" / "me" / "menyo-small"
    head_jsonl(data_path / "menyo20k" / "train.jsonl", dataset / "train.jsonl", 40)
    git_repo(dataset)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    up = subprocess.run(["bash", str(REPO / "scripts" / "hub-mirror-up.sh"), str(base), str(port)],
                        capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        pytest.fail(f"hub mirror did not start: {up.stderr[-1000:]}")
    yield f"http://127.0.0.1:{port}"
    subprocess.run(["bash", str(REPO / "scripts" / "hub-mirror-down.sh"), str(base)], check=False)


def test_hf_dataset_and_hf_teacher_give_the_rows_of_local_files(cli, hub_mirror, minilm_path, data_path, tmp_path):
    env = {"HF_ENDPOINT": hub_mirror, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(tmp_path / "hf-home")}
    remote, local = tmp_path / "remote", tmp_path / "local"
    cli("precompute-embeddings", "--input", "hf://datasets/me/menyo-small", "--text-column", "en",
        "--teacher", "hf://sentence-transformers/all-MiniLM-L6-v2", "--output", str(remote), env=env, check=True)
    src = head_jsonl(data_path / "menyo20k" / "train.jsonl", tmp_path / "menyo20k" / "train.jsonl", 40)
    cli("precompute-embeddings", "--input", str(src), "--text-column", "en", "--teacher", minilm_path,
        "--output", str(local), check=True)
    a, b = load_rows(remote), load_rows(local)
    assert a["en"] == b["en"] and a["row_idx"] == list(range(40))
    assert a["teacher_embedding_final"] == b["teacher_embedding_final"]


def test_missing_hub_repo_is_a_one_line_error(cli, hub_mirror, tmp_path):
    env = {"HF_ENDPOINT": hub_mirror, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(tmp_path / "hf-home")}
    done = cli("precompute-embeddings", "--input", "hf://datasets/me/does-not-exist", "--output", str(tmp_path / "o"),
               env=env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: input hf://datasets/me/does-not-exist not found")
