"""Bottom-k sampling of token occurrences: deterministic, and the same however the rows are split.

Every occurrence of a token, (row_idx, position), gets a 64-bit key, a hash of (seed, row_idx,
position); a token keeps the `cap` occurrences with the smallest keys. For a good hash the keys
are independent and uniform, so that is a uniform sample without replacement. And the `cap`
smallest keys of a union are the `cap` smallest of the parts' `cap` smallest: chunks and shards
reduce on their own, and merging is concatenate + reduce again. One shard and N shards, a run and
a killed-and-resumed run, give the same sample.

A chunk file holds its rows' candidates, sorted by (token_id, key), with `seen`: the token's
occurrences in that chunk on the token's first row and 0 on the others, so summing `seen` over
every chunk gives each token's total count, and counts and samples are published in one file.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# Fixed bytes per stored candidate besides its vector: token_id, key, row_idx, position, seen.
ROW_OVERHEAD = 4 + 8 + 8 + 4 + 8


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised (wrapping uint64 arithmetic is the point)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def occurrence_keys(seed: int, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """key(seed, row_idx, position): chained so that (r, p) and (p, r) do not collide."""
    base = splitmix64(np.uint64(seed % 2**64))
    return splitmix64(splitmix64(base ^ rows.astype(np.uint64)) ^ positions.astype(np.uint64))


@dataclasses.dataclass(slots=True)
class Candidates:
    """Sampled occurrences, one entry per row of each array."""

    token: np.ndarray  # int32
    key: np.ndarray  # uint64
    row: np.ndarray  # int64
    pos: np.ndarray  # int32
    vec: np.ndarray  # float16, (n, dim)

    @classmethod
    def empty(cls, dim: int) -> Candidates:
        return cls(np.empty(0, np.int32), np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int32),
                   np.empty((0, dim), np.float16))

    def __len__(self) -> int:
        return len(self.token)

    def take(self, idx: np.ndarray) -> Candidates:
        return Candidates(self.token[idx], self.key[idx], self.row[idx], self.pos[idx], self.vec[idx])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.token, self.key, self.row, self.pos, self.vec))


def concat(parts: list[Candidates], dim: int) -> Candidates:
    if not parts:
        return Candidates.empty(dim)
    return Candidates(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("token", "key", "row", "pos", "vec")))


def group_starts(sorted_tokens: np.ndarray) -> np.ndarray:
    """Index of the first row of each run of equal token ids."""
    if len(sorted_tokens) == 0:
        return np.empty(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_tokens[1:] != sorted_tokens[:-1]])


def bottom_k(c: Candidates, cap: int) -> Candidates:
    """Per token, the `cap` occurrences with the smallest keys, sorted by (token_id, key).
    Row and position break key ties, so the result never depends on the input order."""
    order = np.lexsort((c.pos, c.row, c.key, c.token))
    tokens = c.token[order]
    starts = group_starts(tokens)
    first_of_group = np.repeat(starts, np.diff(np.r_[starts, len(tokens)]))
    rank = np.arange(len(tokens)) - first_of_group
    return c.take(order[rank < cap])


def chunk_schema(dim: int) -> pa.Schema:
    return pa.schema([("token_id", pa.int32()), ("key", pa.uint64()), ("row_idx", pa.int64()),
                      ("position", pa.int32()), ("seen", pa.int64()),
                      ("vector", pa.list_(pa.float16(), dim))])


def vectors_column(vec: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), vec.shape[1])


def chunk_table(c: Candidates, tokens_seen: np.ndarray, dim: int) -> pa.Table:
    """A chunk file's table: `c` reduced and sorted, and every occurrence of this chunk
    (`tokens_seen`, one token id per occurrence) counted on its token's first row."""
    ids, counts = np.unique(tokens_seen, return_counts=True)
    seen = np.zeros(len(c), np.int64)
    starts = group_starts(c.token)
    # Every occurring token keeps at least one candidate (cap >= 1): its first row carries the count.
    seen[starts] = counts[np.searchsorted(ids, c.token[starts])]
    return pa.Table.from_arrays([pa.array(c.token, pa.int32()), pa.array(c.key, pa.uint64()),
                                 pa.array(c.row, pa.int64()), pa.array(c.pos, pa.int32()), pa.array(seen),
                                 vectors_column(c.vec)], schema=chunk_schema(dim))


def from_table(table: pa.Table, dim: int) -> tuple[Candidates, np.ndarray]:
    """Candidates and their `seen` column from a chunk file's table."""
    def col(name: str, dtype: type) -> np.ndarray:
        return table.column(name).to_numpy().astype(dtype, copy=False)

    vec = table.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, dim)
    return (Candidates(col("token_id", np.int32), col("key", np.uint64), col("row_idx", np.int64),
                       col("position", np.int32), vec.astype(np.float16, copy=False)), col("seen", np.int64))


def row_bytes(dim: int) -> int:
    return dim * 2 + ROW_OVERHEAD
