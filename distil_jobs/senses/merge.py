"""Merging a gather-senses run's chunks into the final layout, one token-id range at a time.

Chunk files are sorted by token id and written in small row groups, so the footers' min/max
statistics say which row groups hold a range: a range reads only those, reduces each chunk's rows
into the running per-token bottom-k as it goes, and is written out before the next one starts.
Memory is bounded by one range's samples, whatever the number of chunks or the corpus size.

Final layout (what the manifest lists):
  samples/part-<lo:08d>-<hi:08d>.parquet   token_id, row_idx, position, vector; [lo, hi) token ids,
                                           sorted by (token_id, key); a range with no token has no file
  counts.parquet                           token_id, seen, kept; every token that occurred
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distil_jobs.artifacts.location import Location
from distil_jobs.artifacts.verify import REMAKE, IntegrityError
from distil_jobs.errors import first_line
from distil_jobs.senses.sampling import Candidates, bottom_k, concat, from_table, vectors_column

log = logging.getLogger("distil_jobs.senses")
COUNTS = "counts.parquet"
SAMPLES = "samples/"
GROUP_BYTES = 16 << 20  # row groups of chunk files: small enough that a range reads little beyond itself


def samples_name(lo: int, hi: int) -> str:
    return f"{SAMPLES}part-{lo:08d}-{hi:08d}.parquet"


def range_bound(tokens_per_file: int, cap: int, row_bytes: int) -> int:
    """Peak bytes of one range's merge: the running sample, one chunk's rows for the range, their
    concatenation (2x), and the row groups read around the range's ends."""
    return 4 * tokens_per_file * cap * row_bytes + 2 * GROUP_BYTES


@dataclasses.dataclass(slots=True)
class MergeResult:
    files: list[str]  # relative paths, samples first, then counts.parquet
    token_ranges: list[list[int | str]]  # [lo, hi, file] per range with a file; hi exclusive
    tokens_covered: int
    total_vectors: int


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkIndex:
    """Per chunk file, each row group's (first, last) token id, from the footer."""

    rel: str
    groups: tuple[tuple[int, int], ...]

    def overlapping(self, lo: int, hi: int) -> list[int]:
        return [i for i, (first, last) in enumerate(self.groups) if first < hi and last >= lo]


def _damaged(out: Location, rel: str, e: Exception) -> IntegrityError:
    return IntegrityError(f"{out.uri}/{rel} is damaged ({first_line(e, 120)}): delete it and rerun its shard to "
                          f"remake it, or {REMAKE}")


def index_chunks(out: Location, files: list[str]) -> list[ChunkIndex]:
    index = []
    for rel in files:
        try:
            with out.fs.open(out.path(rel), "rb") as f:
                meta = pq.ParquetFile(f).metadata
                col = meta.schema.to_arrow_schema().get_field_index("token_id")
                groups = []
                for g in range(meta.num_row_groups):
                    stats = meta.row_group(g).column(col).statistics
                    if meta.row_group(g).num_rows and stats is not None and stats.has_min_max:
                        groups.append((int(stats.min), int(stats.max)))
        except (OSError, pa.ArrowException) as e:
            raise _damaged(out, rel, e) from None
        index.append(ChunkIndex(rel, tuple(groups)))
    return index


def read_range(out: Location, chunk: ChunkIndex, lo: int, hi: int, dim: int) -> tuple[Candidates, np.ndarray]:
    """A chunk's rows with lo <= token_id < hi, and their `seen` column. Page checksums (written with
    every chunk) are checked as the pages are read: a chunk damaged on disk is refused, not merged."""
    groups = chunk.overlapping(lo, hi)
    if not groups:
        return Candidates.empty(dim), np.empty(0, np.int64)
    try:
        with out.fs.open(out.path(chunk.rel), "rb") as f:
            table = pq.ParquetFile(f, page_checksum_verification=True).read_row_groups(groups)
    except (OSError, pa.ArrowException) as e:
        raise _damaged(out, chunk.rel, e) from None
    cands, seen = from_table(table, dim)
    inside = np.flatnonzero((cands.token >= lo) & (cands.token < hi))
    return cands.take(inside), seen[inside]


def merge_range(out: Location, index: list[ChunkIndex], lo: int, hi: int, cap: int, dim: int
                ) -> tuple[Candidates, np.ndarray]:
    """The range's final sample and its per-token totals (seen[t - lo])."""
    running, seen = Candidates.empty(dim), np.zeros(hi - lo, np.int64)
    for chunk in index:
        new, new_seen = read_range(out, chunk, lo, hi, dim)
        if not len(new):
            continue
        np.add.at(seen, new.token - lo, new_seen)
        both = concat([running, new], dim)
        del running, new  # keep the peak at the bound range_bound() promises
        running = bottom_k(both, cap)
        del both
    return running, seen


def merge_chunks(out: Location, files: list[str], dim: int, cap: int, vocab_size: int, tokens_per_file: int,
                 progress: bool = True) -> MergeResult:
    """Write samples/ and counts.parquet from every chunk; each file is published as it is written."""
    from tqdm.auto import tqdm

    index = index_chunks(out, files)
    result = MergeResult([], [], 0, 0)
    count_parts: list[pa.Table] = []
    staging = tempfile.mkdtemp(prefix="distil-merge-")
    try:
        for lo in tqdm(range(0, vocab_size, tokens_per_file), desc="merge", unit="ranges", disable=not progress):
            hi = min(lo + tokens_per_file, vocab_size)
            sample, seen = merge_range(out, index, lo, hi, cap, dim)
            occurred = np.flatnonzero(seen)
            if not len(occurred):
                continue
            kept = np.bincount(sample.token - lo, minlength=hi - lo)
            count_parts.append(pa.table({"token_id": pa.array(occurred + lo, pa.int32()),
                                         "seen": pa.array(seen[occurred], pa.int64()),
                                         "kept": pa.array(kept[occurred], pa.int32())}))
            rel = samples_name(lo, hi)
            local = os.path.join(staging, "samples.parquet")
            pq.write_table(pa.table({"token_id": pa.array(sample.token, pa.int32()),
                                     "row_idx": pa.array(sample.row, pa.int64()),
                                     "position": pa.array(sample.pos, pa.int32()),
                                     "vector": vectors_column(sample.vec)}), local,
                           # Plain, not dictionary-encoded: float16 vectors barely repeat, and the cluster
                           # job decoded a dictionary-encoded column ~7x slower for 4% less disk.
                           use_dictionary=False)
            out.put_files([(local, rel)], message=f"distil-jobs: publish {rel}")
            result.files.append(rel)
            result.token_ranges.append([lo, hi, rel])
            result.tokens_covered += len(occurred)
            result.total_vectors += len(sample)
        local = os.path.join(staging, COUNTS)
        schema = pa.schema([("token_id", pa.int32()), ("seen", pa.int64()), ("kept", pa.int32())])
        pq.write_table(pa.concat_tables(count_parts) if count_parts else schema.empty_table(), local)
        out.put_files([(local, COUNTS)], message=f"distil-jobs: publish {COUNTS}")
        result.files.append(COUNTS)
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return result
