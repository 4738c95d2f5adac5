"""Publishing a job's output in pieces: chunks appear atomically, `progress.json` says which are done."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from distil_jobs.artifacts.location import Location
from distil_jobs.artifacts.manifest import PROGRESS, list_files


class Publisher:
    """Stages finished files locally and publishes them every `push_every` rows.

    On a file system or S3 each file is published atomically on its own; on the Hub a flush is
    one commit, so `push_every` bounds the number of commits without re-uploading earlier chunks.
    """

    def __init__(self, location: Location, kind: str, push_every: int, total_rows: int) -> None:
        self.location = location
        self.kind = kind
        self.push_every = max(1, push_every)
        self.total_rows = total_rows
        self._staging = tempfile.mkdtemp(prefix="distil-stage-")
        self._pending: list[tuple[str, str]] = []
        self._pending_rows = 0

    def staging_path(self, rel: str) -> str:
        path = os.path.join(self._staging, rel.replace("/", "__"))
        return path

    def add(self, local: str, rel: str, rows: int) -> None:
        self._pending.append((local, rel))
        self._pending_rows += rows
        if self._pending_rows >= self.push_every:
            self.flush()

    def flush(self, extra_files: list[tuple[str, str]] | None = None) -> None:
        files = self._pending + (extra_files or [])
        if not files:
            return
        self.location.put_files(files, message=f"distil-jobs: publish {len(files)} file(s)")
        for local, _ in files:
            if local.startswith(self._staging):
                os.unlink(local)
        self._pending, self._pending_rows = [], 0
        self.write_progress()

    def write_progress(self) -> None:
        published = [f for f in list_files(self.location) if f.startswith("data/")]
        progress: dict[str, Any] = {"kind": self.kind, "files": published, "total_rows": self.total_rows,
                                    "complete": False}
        self.location.put_bytes(PROGRESS, json.dumps(progress, indent=2).encode(), message="distil-jobs: progress")

    def close(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)
