"""hf:// artifacts: pushes are commits, earlier chunks are never re-uploaded, the manifest comes last.

The public Hub cannot be reached here, so this is the one place with a stand-in: a local
`HfApi` double that stores commits in a folder, read back through fsspec like `HfFileSystem`.
"""

from __future__ import annotations

import json
import os

from click.testing import CliRunner


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
