"""hf:// artifacts: pushes are commits, earlier chunks are never re-uploaded, the manifest comes last.

The public Hub cannot be reached here, so this is the one place with a stand-in: a local
`HfApi` double that stores commits in a folder, read back through fsspec like `HfFileSystem`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import fsspec
import pytest
from click.testing import CliRunner
from fsspec.implementations.dirfs import DirFileSystem


class LocalHub:
    """Just enough of HfApi: repos are folders under `root`, commits are recorded in order."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commits: list[dict[str, Any]] = []

    def _repo(self, repo_id: str, repo_type: str) -> Path:
        return self.root / ("datasets/" if repo_type == "dataset" else "") / repo_id

    @property
    def head(self) -> str:
        return hashlib.sha1(str(len(self.commits)).encode()).hexdigest()

    def create_repo(self, repo_id: str, repo_type: str = "model", exist_ok: bool = False, private: bool = False):
        self._repo(repo_id, repo_type).mkdir(parents=True, exist_ok=exist_ok)

    def repo_info(self, repo_id: str, repo_type: str = "model", revision: str = "main"):
        return type("Info", (), {"sha": self.head})()

    def create_commit(self, repo_id, operations, commit_message="", repo_type="model", parent_commit=None,
                      revision="main"):
        if parent_commit is not None and parent_commit != self.head:
            raise RuntimeError("412 Precondition Failed: parent commit is not the head")
        base = self._repo(repo_id, repo_type)
        for op in operations:
            target = base / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            src = op.path_or_fileobj
            target.write_bytes(src if isinstance(src, bytes) else Path(src).read_bytes())
        self.commits.append({"message": commit_message, "files": [op.path_in_repo for op in operations]})

    def delete_file(self, path_in_repo, repo_id, repo_type="model", revision="main"):
        (self._repo(repo_id, repo_type) / path_in_repo).unlink()


class MainBranchFileSystem(DirFileSystem):
    """Reads the double's folders with HfFileSystem's paths (`org/name@main/...`)."""

    def __init__(self, root: Path) -> None:
        super().__init__(path=str(root), fs=fsspec.filesystem("file"))

    def _join(self, path):
        if isinstance(path, str):
            path = path.replace("@main", "")
        return super()._join(path)


@pytest.fixture()
def local_hub(tmp_path, monkeypatch):
    import huggingface_hub

    from distil_jobs.artifacts import location

    hub = LocalHub(tmp_path / "hub")
    hub.root.mkdir()
    monkeypatch.setattr(location, "_hub_api", lambda: hub)
    monkeypatch.setattr(huggingface_hub, "HfFileSystem", lambda: MainBranchFileSystem(hub.root))
    return hub


def test_push_every_makes_one_commit_per_push_and_never_reuploads(local_hub, menyo_small, monkeypatch):
    from distil_jobs.cli import main

    monkeypatch.setenv("HF_TOKEN", "hf_do_not_log_me")
    result = CliRunner().invoke(main, [
        "precompute-embeddings", "--input", str(menyo_small), "--output", "hf://datasets/me/menyo-emb",
        "--text-column", "en", "--max-rows", "60", "--chunk-rows", "10", "--push-every", "30", "--max-length", "32",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    chunk_commits = [c for c in local_hub.commits if any(f.startswith("data/") for f in c["files"])]
    assert len(chunk_commits) == 2  # 60 rows, a push every 30
    uploaded = [f for c in chunk_commits for f in c["files"] if f.startswith("data/")]
    assert len(uploaded) == len(set(uploaded)) == 6  # each chunk exactly once
    assert all("progress.json" in c["files"] for c in chunk_commits)
    assert local_hub.commits[-1]["files"] == ["manifest.json"]  # the manifest is the last commit

    repo = local_hub.root / "datasets" / "me" / "menyo-emb"
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["rows"] == 60
    assert "hf_do_not_log_me" not in json.dumps(manifest) and "hf_do_not_log_me" not in result.output

    from distil_jobs.data import read_table

    assert read_table("hf://datasets/me/menyo-emb").column("row_idx").to_pylist() == list(range(60))


def test_hub_manifest_creation_is_exclusive(local_hub):
    from distil_jobs.artifacts import open_location

    loc = open_location("hf://datasets/me/race")
    local_hub.create_repo("me/race", repo_type="dataset")
    assert loc.create_exclusive("manifest.json", b"{}") is True
    assert loc.create_exclusive("manifest.json", b"{}") is False
    assert os.path.exists(local_hub.root / "datasets" / "me" / "race" / "manifest.json")
