"""Integration-test fixtures. `local_hub` stands in for the public Hugging Face Hub, the one
service these machines cannot reach: a local `HfApi` double that stores commits in a folder,
read back through fsspec the way `HfFileSystem` reads the Hub."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import fsspec
import pytest
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

    def delete_folder(self, path_in_repo, repo_id, repo_type="model", revision="main"):
        import shutil

        shutil.rmtree(self._repo(repo_id, repo_type) / path_in_repo)
        self.commits.append({"message": f"delete {path_in_repo}", "files": [path_in_repo]})


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
    from distil_jobs.artifacts import location

    hub = LocalHub(tmp_path / "hub")
    hub.root.mkdir()
    monkeypatch.setattr(location, "_hub_api", lambda: hub)
    monkeypatch.setattr(location, "_hub_filesystem", lambda: MainBranchFileSystem(hub.root))
    return hub


@pytest.fixture(scope="session")
def sense_dictionary(data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sense dictionary: gather-senses (MiniLM, last layer) on 300 corpus sentences, then cluster --k 4."""
    from tests.conftest import run_cli
    from tests.integration.sense_helpers import SENSE_CORPUS_ROWS, corpus_head, gather

    folder = tmp_path_factory.mktemp("senses")
    samples = gather(run_cli, corpus_head(data_path, folder / "corpus.tsv", SENSE_CORPUS_ROWS), folder / "samples", 24)
    out = folder / "dict"
    run_cli("cluster", "--samples", str(samples), "--output", str(out), "--k", "4", check=True)
    return out
