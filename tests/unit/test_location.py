"""Local artifact locations: atomic publish and exclusive creation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from distil_jobs.artifacts import open_location
from distil_jobs.errors import DistilError


def test_create_exclusive_has_exactly_one_winner(tmp_path):
    loc = open_location(str(tmp_path / "art"))
    with ThreadPoolExecutor(8) as pool:
        wins = list(pool.map(lambda i: loc.create_exclusive("manifest.json", f"{i}".encode()), range(16)))
    assert wins.count(True) == 1
    assert not [p for p in (tmp_path / "art").iterdir() if p.name != "manifest.json"]


def test_put_files_leaves_no_temporary_files(tmp_path):
    src = tmp_path / "chunk.parquet"
    src.write_bytes(b"data")
    loc = open_location(f"file://{tmp_path / 'art'}")
    loc.put_files([(str(src), "data/part-0.parquet")])
    assert loc.read_bytes("data/part-0.parquet") == b"data"
    assert loc.listdir("data") == ["part-0.parquet"]


def test_unknown_scheme_is_a_clear_error():
    with pytest.raises(DistilError, match="unsupported scheme 'gs://'"):
        open_location("gs://bucket/x")
