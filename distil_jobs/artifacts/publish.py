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
        return os.path.join(self._staging, rel.replace("/", "__"))

    def add(self, local: str, rel: str, rows: int) -> None:
        self._pending.append((local, rel))
        self._pending_rows += rows
        if self._pending_rows >= self.push_every:
            self.flush()

    def flush(self) -> None:
        """Publish pending chunks and the updated `progress.json` together (one commit on the Hub)."""
        if not self._pending:
            return
        published = {f for f in list_files(self.location) if f.startswith("data/")}
        published |= {rel for _, rel in self._pending}
        progress: dict[str, Any] = {"kind": self.kind, "files": sorted(published), "total_rows": self.total_rows,
                                    "complete": False}
        progress_file = os.path.join(self._staging, PROGRESS)
        with open(progress_file, "w") as f:
            json.dump(progress, f, indent=2)
        # progress.json goes last: on a file system or S3 it never lists a chunk not yet there.
        self.location.put_files([*self._pending, (progress_file, PROGRESS)],
                                message=f"distil-jobs: publish {len(self._pending)} chunk(s)")
        for local, _ in self._pending:
            os.unlink(local)
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)
