"""Sharded, chunked Parquet output: for any job that maps input rows to output rows.

Shard *i* of *N* takes a contiguous block of the rows, cut into chunks of `chunk_rows`; each chunk
is `data/part-<first>-<last>.parquet`, so files sort into input order whatever the shard count,
and a rerun skips the chunks already published (the unit of resume). Chunks are staged locally
and published every `push_every` rows together with `progress.json` (one commit on the Hub).
When its chunks are out, a shard leaves its done marker; `collect` then checks that every shard
is done and sums the rows from the Parquet footers, for the job to write its manifest.

    with ChunkedOutput(out, kind, shard, n_rows, chunk_rows) as chunks:
        for start, end in chunks.pending():
            chunks.write(start, end, table_of(start, end))
    summary = collect(out, shard.count, required=False)   # None until every shard is done
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distil_jobs.artifacts.location import Location
from distil_jobs.artifacts.manifest import PROGRESS, list_files
from distil_jobs.artifacts.run import mark_shard_done, missing_shards
from distil_jobs.errors import DistilError
from distil_jobs.shards import Shard

log = logging.getLogger("distil_jobs.artifacts.chunks")
DATA = "data/"


def chunk_files(out: Location) -> list[str]:
    """The published chunks, in row order. The one listing every reader and finalizer uses: it never
    includes a temporary file a killed upload left behind."""
    return [f for f in list_files(out) if f.startswith(DATA) and f.endswith(".parquet")]


def chunk_name(start: int, end: int) -> str:
    return f"{DATA}part-{start:010d}-{end:010d}.parquet"


def parquet_rows(out: Location, rel: str) -> int:
    # Another shard wrote `rel`: a listing of data/ this process cached earlier must not hide it.
    out._forget(rel)
    with out.fs.open(out.path(rel), "rb") as f:
        return int(pq.ParquetFile(f).metadata.num_rows)


class ChunkedOutput:
    """This shard's chunks: which are still to do, writing them, and the done marker at the end."""

    def __init__(self, out: Location, kind: str, shard: Shard, n_rows: int, chunk_rows: int,
                 push_every: int | None = None) -> None:
        self.out, self.kind, self.shard = out, kind, shard
        start, end = shard.row_range(n_rows)
        self.ranges = [(s, min(s + chunk_rows, end)) for s in range(start, end, chunk_rows)]
        self.push_every = max(1, push_every or chunk_rows)
        self.total_rows = n_rows
        self._staging = tempfile.mkdtemp(prefix="distil-stage-")
        self._pending: list[tuple[str, str, int]] = []
        self._known_rows: dict[str, int] = {}

    @property
    def rows(self) -> int:
        """Rows of this shard, done or not."""
        return sum(e - s for s, e in self.ranges)

    def pending(self) -> list[tuple[int, int]]:
        done = set(chunk_files(self.out))
        todo = []
        for start, end in self.ranges:
            if chunk_name(start, end) in done:
                log.info("chunk %s already published: skipped", chunk_name(start, end))
            else:
                todo.append((start, end))
        return todo

    def write(self, start: int, end: int, table: pa.Table, **parquet_options: Any) -> None:
        """Stage the chunk [start, end); `parquet_options` go to `pq.write_table` (row group size,
        page checksums: a job whose chunks are read back in parts chooses them)."""
        rel = chunk_name(start, end)
        local = os.path.join(self._staging, rel.replace("/", "__"))
        pq.write_table(table, local, **parquet_options)
        self._pending.append((local, rel, table.num_rows))
        if sum(rows for *_, rows in self._pending) >= self.push_every:
            self.flush()

    def flush(self) -> None:
        """Publish pending chunks, then `progress.json` (one commit on the Hub): it never lists a chunk
        that is not there, and says how many rows are readable with --allow-partial."""
        if not self._pending:
            return
        self._known_rows.update({rel: rows for _, rel, rows in self._pending})
        files = sorted(set(chunk_files(self.out)) | set(self._known_rows))
        for rel in files:
            if rel not in self._known_rows:  # another shard's chunk: its footer says its rows
                self._known_rows[rel] = parquet_rows(self.out, rel)
        progress = {"kind": self.kind, "files": files, "rows": sum(self._known_rows[f] for f in files),
                    "total_rows": self.total_rows, "complete": False}
        progress_file = os.path.join(self._staging, PROGRESS)
        with open(progress_file, "w") as f:
            json.dump(progress, f, indent=2)
        self.out.put_files([*((local, rel) for local, rel, _ in self._pending), (progress_file, PROGRESS)],
                           message=f"distil-jobs: publish {len(self._pending)} chunk(s)")
        for local, _, _ in self._pending:
            os.unlink(local)
        self._pending = []

    def close(self, info: dict[str, Any] | None = None) -> None:
        """Publish what is left and mark this shard done."""
        self.flush()
        mark_shard_done(self.out, self.shard, {"rows": self.rows, **(info or {})})

    def __enter__(self) -> ChunkedOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class ChunkSummary:
    files: list[str]
    rows: int
    schema: pa.Schema


def collect(out: Location, shard_count: int, required: bool) -> ChunkSummary | None:
    """Every shard done: the chunks, their total rows and schema. Otherwise None, or with `required`
    a one-line error naming the shards still missing."""
    missing = missing_shards(out, shard_count)
    if missing:
        if required:
            raise DistilError(f"{len(missing)} of {shard_count} shard(s) not done: "
                              f"{', '.join(map(str, missing[:20]))}; rerun those shard indices")
        log.info("shard done; waiting for %d other shard(s) before the manifest is written", len(missing))
        return None
    files = chunk_files(out)
    if not files:
        raise DistilError(f"{out.uri}: every shard is marked done but no chunk is there: delete it and rerun")
    rows = sum(parquet_rows(out, f) for f in files)
    with out.fs.open(out.path(files[0]), "rb") as f:
        schema = pq.ParquetFile(f).schema_arrow
    return ChunkSummary(files, rows, schema)
