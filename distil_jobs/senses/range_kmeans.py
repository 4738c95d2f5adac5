"""One token range's senses at once: the cluster job's unit of work, batched across tokens.

Most tokens of a vocabulary have a handful of samples, so clustering them one `cluster_token` call
at a time spent its time in per-token Python (deduplication, generator set-up, k-means++ steps of a
few microseconds of arithmetic each), not in k-means. Here a range is handled in a few vectorised
passes:

- duplicate rows are looked for with one 64-bit hash per row over the whole range; only a token
  with a repeated hash goes through the exact `distinct_rows` (a hash collision costs time, never a
  wrong answer: equal rows always share a hash);
- tokens with at most k samples and no duplicate keep their samples in one scatter;
- the others are seeded in batches of tokens with the same number of distinct samples
  (`seed_batch`), then each runs faiss k-means on its own.

Every token still goes through the functions `cluster_token` uses, with the same generator draws
and array shapes, so its senses are the bytes `cluster_token` gives (tested), whatever range,
batch, thread or shard it ran in. `--k-rule skd` (MCL per token dominates) keeps the per-token path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import faiss
import numpy as np

from distil_jobs.senses.kmeans import (
    Params,
    TokenSenses,
    cluster_token,
    clustered,
    distinct_rows,
    seed_batch,
    seeding_draws,
    token_rng,
)

_TASK_ROWS = 8_192  # distinct samples per seeding batch: bounds its [tokens, trials, n] arrays to ~1 MiB each
_HASH_ROWS = 65_536  # rows hashed per step: bounds the [rows, words] uint64 temporary to ~10 MiB
_HASH_STRIDE = 6  # hash every 6th word of a row (see duplicate_suspects)
_SALT = 0x5EED  # fixed: the hash only has to be the same for equal rows, in any run

T = TypeVar("T")
Mapper = Callable[[Callable[[Any], T], Sequence[Any]], list[T]]


@contextlib.contextmanager
def thread_pool(workers: int | None) -> Iterator[Mapper]:
    """A `map` over `workers` threads (default: every core), each running faiss and BLAS on one core.

    Threads, not processes: faiss releases the GIL while it clusters and numpy while it multiplies,
    so threads use every core without copying samples into other processes. One BLAS/OpenMP thread
    per worker: the calls are small, and a library fanning each one out over every core spent more
    time synchronising than computing (k-means++ on 1,000 samples: 3.9 ms with numpy's 2 OpenBLAS
    threads, 1.0 ms with one)."""
    workers = workers or os.cpu_count() or 1
    saved = faiss.omp_get_max_threads()
    limits: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    with contextlib.suppress(ImportError):  # threadpoolctl comes with scikit-learn; without it BLAS keeps its threads
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(1, user_api="blas")
    with limits:
        try:
            faiss.omp_set_num_threads(1)  # per calling thread: this one, then each worker's initializer
            if workers == 1:
                yield lambda fn, items: [fn(item) for item in items]
                return
            with ThreadPoolExecutor(workers, initializer=faiss.omp_set_num_threads, initargs=(1,),
                                    thread_name_prefix="kmeans") as pool:
                yield lambda fn, items: list(pool.map(fn, items))
        finally:
            faiss.omp_set_num_threads(saved)


def duplicate_suspects(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per token, whether two of its rows share a 64-bit hash of their bytes (so may be equal).

    The hash is Σ word_i · m_i mod 2^64 over every 6th 8-byte word of the row (m_i fixed odd
    numbers): equal rows always share it, and two contextual vectors agreeing on 64 of their
    values are rare enough that hashing every word (6x the time) bought nothing."""
    tokens = len(starts) - 1
    rows = np.ascontiguousarray(values)
    width = rows.shape[1] * rows.itemsize
    if width % 8:  # pad rows to whole words (dim 384 float16 needs none)
        rows = np.pad(rows.view(np.uint8).reshape(len(rows), width), ((0, 0), (0, 8 - width % 8)))
    words = rows.view(np.uint64).reshape(len(rows), -(-width // 8))[:, ::_HASH_STRIDE]
    mult = np.random.default_rng(_SALT).integers(1, 2**63, size=words.shape[1], dtype=np.uint64) | np.uint64(1)
    hashes = np.empty(len(words), np.uint64)
    for lo in range(0, len(words), _HASH_ROWS):
        hashes[lo:lo + _HASH_ROWS] = (words[lo:lo + _HASH_ROWS] * mult).sum(1, dtype=np.uint64)
    owner = np.repeat(np.arange(tokens), np.diff(starts))
    order = np.lexsort((hashes, owner))
    hashes, owner = hashes[order], owner[order]
    repeated = (hashes[1:] == hashes[:-1]) & (owner[1:] == owner[:-1])
    suspects = np.zeros(tokens, bool)
    suspects[owner[1:][repeated]] = True
    return suspects


def cluster_range(token_ids: np.ndarray, starts: np.ndarray, values: np.ndarray, params: Params, pmap: Mapper
                  ) -> dict[str, np.ndarray]:
    """The senses of one range's tokens: token i's samples are values[starts[i]:starts[i + 1]] (float16,
    sorted by token id). Returns the part's arrays (`part_arrays`)."""
    n = np.diff(starts)
    if params.k_rule != "fixed":
        tasks = [list(range(lo, min(lo + 64, len(token_ids)))) for lo in range(0, len(token_ids), 64)]
        done = pmap(lambda task: [cluster_token(int(token_ids[i]), values[starts[i]:starts[i + 1]], params)
                                  for i in task], tasks)
        return part_arrays([s for task in done for s in task], values.shape[1])
    k = params.k
    suspects = duplicate_suspects(values, starts)
    plain = (n <= k) & ~suspects  # keep their samples as they are, one sense each
    results: dict[int, TokenSenses] = {}
    distinct: dict[int, np.ndarray] = {}  # the suspects' distinct rows, float16
    for i in np.flatnonzero(suspects):
        rows, inverse = distinct_rows(values[starts[i]:starts[i + 1]])
        if len(rows) <= k:
            counts = np.bincount(inverse.ravel(), minlength=len(rows)).astype(np.int64)
            results[i] = TokenSenses(int(token_ids[i]), rows.astype(np.float32), counts, 0.0, int(n[i]), k)
        else:
            distinct[i] = rows
    todo = [i for i in np.flatnonzero(~plain) if i not in results]
    sizes = {i: len(distinct[i]) if i in distinct else int(n[i]) for i in todo}

    def seed_and_cluster(task: list[int]) -> list[tuple[int, TokenSenses]]:
        xs = [values[starts[i]:starts[i + 1]].astype(np.float32) for i in task]
        seeds = [distinct[i].astype(np.float32) if i in distinct else x for i, x in zip(task, xs, strict=True)]
        draws = [seeding_draws(token_rng(params.seed, int(token_ids[i])), sizes[i], k) for i in task]
        inits = seed_batch(np.stack(seeds), np.array([f for f, _ in draws]), np.stack([u for _, u in draws]))
        return [(i, clustered(int(token_ids[i]), x, init, params)) for i, x, init in zip(task, xs, inits, strict=True)]

    # Tokens with the same number of distinct samples share a seeding batch; the biggest tasks first,
    # so the threads finish together.
    by_size: dict[int, list[int]] = {}
    for i in todo:
        by_size.setdefault(sizes[i], []).append(i)
    tasks = [group[lo:lo + max(1, _TASK_ROWS // m)] for m, group in by_size.items()
             for lo in range(0, len(group), max(1, _TASK_ROWS // m))]
    tasks.sort(key=lambda task: -sum(int(n[i]) for i in task))
    for task in pmap(seed_and_cluster, tasks):
        results.update(task)
    return assemble(token_ids, starts, values, plain, results, k)


def assemble(token_ids: np.ndarray, starts: np.ndarray, values: np.ndarray, plain: np.ndarray,
             results: dict[int, TokenSenses], k: int) -> dict[str, np.ndarray]:
    """The part's arrays in token order: the plain tokens' samples scattered in one step, the others
    copied per token."""
    n = np.diff(starts)
    sizes = np.where(plain, n, 0)
    inertia = np.zeros(len(n), np.float64)
    for i, s in results.items():
        sizes[i], inertia[i] = len(s.counts), s.inertia
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    centroids = np.empty((int(offsets[-1]), values.shape[1]), np.float32)
    counts = np.ones(int(offsets[-1]), np.int64)
    keep = np.flatnonzero(plain)
    if len(keep):
        lengths = n[keep]
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        centroids[np.repeat(offsets[keep], lengths) + within] = values[np.repeat(starts[keep], lengths) + within]
    for i, s in results.items():
        centroids[offsets[i]:offsets[i + 1]] = s.centroids
        counts[offsets[i]:offsets[i + 1]] = s.counts
    return {"token_ids": token_ids.astype(np.int64), "sizes": sizes.astype(np.int64),
            "ks": np.full(len(n), k, np.int64), "samples": n.astype(np.int64), "inertia": inertia,
            "centroids": centroids, "counts": counts}


def part_arrays(senses: list[TokenSenses], dim: int) -> dict[str, np.ndarray]:
    """One range's senses: per token its id, sense count, k, samples and inertia; per sense its centroid
    and count. Everything the merge and the manifest need, so the merge never reads samples again."""
    def column(values: list[Any], dtype: type) -> np.ndarray:
        return np.asarray(values, dtype=dtype)

    return {
        "token_ids": column([s.token_id for s in senses], np.int64),
        "sizes": column([len(s.counts) for s in senses], np.int64),
        "ks": column([s.k for s in senses], np.int64),
        "samples": column([s.samples for s in senses], np.int64),
        "inertia": column([s.inertia for s in senses], np.float64),
        "centroids": np.concatenate([s.centroids for s in senses]).astype(np.float32) if senses
        else np.zeros((0, dim), np.float32),
        "counts": np.concatenate([s.counts for s in senses]).astype(np.int64) if senses else np.zeros(0, np.int64),
    }
