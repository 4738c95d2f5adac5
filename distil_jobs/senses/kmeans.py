"""Per-token k-means with faiss: one token's samples → its senses (centroids and sample counts).

Each token is clustered on its own (a sense belongs to one token), from a fixed initialisation:
k distinct samples drawn with a generator seeded by (seed, token id). A token's result therefore
depends only on its samples and the seed, never on which shard, worker or order ran it, so shards
merge into exactly the dictionary of one unsharded run. The CUDA image would swap faiss-cpu for
faiss-gpu (same `faiss.Kmeans` call, `gpu=True`); here it is faiss-cpu.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faiss
import numpy as np

from distil_jobs.senses.mcl import count_clusters, skd_k

K_RULES = ("fixed", "skd")
_GROUP_ROWS = 20_000  # samples per task handed to a worker: many small tokens share one task


@dataclass(frozen=True, slots=True)
class Params:
    k: int
    k_rule: str  # "fixed": k senses per token; "skd": k from the paper's MCL rule, per token
    niter: int
    seed: int


@dataclass(slots=True)
class TokenSenses:
    token_id: int
    centroids: np.ndarray  # [senses, dim] float32
    counts: np.ndarray  # [senses] int64: samples assigned to each sense
    inertia: float  # sum of squared distances from each sample to its sense
    samples: int
    k: int  # the k this token was asked for (per token under --k-rule skd)


def token_rng(seed: int, token_id: int) -> np.random.Generator:
    return np.random.default_rng([seed, token_id])


def initial_centroids(distinct: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k of the (more than k) distinct samples, by greedy k-means++ seeding as scikit-learn does it: each
    next centre is the best of 2 + log(k) candidates drawn in proportion to the squared distance to the
    nearest centre so far. Random samples as centres left about 7% more inertia after 20 iterations."""
    x = np.asarray(distinct, dtype=np.float32)
    n, trials = x.shape[0], 2 + int(np.log(k))
    norms = (x * x).sum(1)
    chosen = [int(rng.integers(n))]
    closest = np.maximum(norms - 2 * x @ x[chosen[0]] + norms[chosen[0]], 0.0)
    for _ in range(1, k):
        cumulative = np.cumsum(closest, dtype=np.float64)
        picks = np.searchsorted(cumulative, rng.random(trials) * cumulative[-1], side="right").clip(max=n - 1)
        dist = np.maximum(norms[None, :] - 2 * x[picks] @ x.T + norms[picks][:, None], 0.0)
        candidate = np.minimum(closest[None, :], dist)
        best = int(np.argmin(candidate.sum(1)))
        chosen.append(int(picks[best]))
        closest = candidate[best]
    return x[chosen]


def kmeans(x: np.ndarray, init: np.ndarray, niter: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`niter` Lloyd iterations from `init` on every sample: centroids, each sample's label and its
    squared distance to its centroid."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, dim = x.shape
    k = init.shape[0]
    # max_points_per_centroid >= n/k: faiss would otherwise train on a subsample of a frequent token.
    km = faiss.Kmeans(dim, k, niter=niter, seed=seed, max_points_per_centroid=max(n // k + 1, 256),
                      min_points_per_centroid=1, verbose=False)
    km.train(x, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
    centroids = np.asarray(km.centroids, dtype=np.float32).reshape(k, dim)
    index = faiss.IndexFlatL2(dim)
    index.add(centroids)
    dist, labels = index.search(x, 1)
    return centroids, labels.ravel().astype(np.int64), np.maximum(dist.ravel(), 0.0)


def distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows (in first-seen order) and each row's index among them. Rows are compared as
    raw bytes: `np.unique(axis=0)` compares field by field and cost more than the clustering itself."""
    x = np.ascontiguousarray(x)
    keys = x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # first-seen order, not byte order: easier to read back
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return x[first[order]], rank[inverse.ravel()]


def cluster_token(token_id: int, samples: np.ndarray, params: Params) -> TokenSenses:
    """One token's senses. A token with at most k distinct samples keeps them as its senses;
    a sense no sample ends up in (faiss splits empty clusters while training, so rarely) is dropped."""
    x = np.asarray(samples, dtype=np.float32)
    rng = token_rng(params.seed, token_id)
    k = skd_k(count_clusters(x, rng)) if params.k_rule == "skd" else params.k
    distinct, inverse = distinct_rows(x)
    if distinct.shape[0] <= k:
        counts = np.bincount(inverse.ravel(), minlength=distinct.shape[0]).astype(np.int64)
        return TokenSenses(token_id, distinct, counts, 0.0, x.shape[0], k)
    centroids, labels, dist = kmeans(x, initial_centroids(distinct, k, rng), params.niter, params.seed)
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    keep = counts > 0
    return TokenSenses(token_id, centroids[keep], counts[keep], float(dist.sum()), x.shape[0], k)


def _one_thread() -> None:
    # OpenMP's thread count is per calling thread: each worker runs its faiss calls on one core,
    # and the pool, not faiss, spreads the tokens over the cores.
    faiss.omp_set_num_threads(1)


def _run_group(group: Sequence[tuple[int, np.ndarray]], params: Params) -> list[TokenSenses]:
    return [cluster_token(t, x, params) for t, x in group]


def groups_of(tokens: Sequence[tuple[int, np.ndarray]], rows: int = _GROUP_ROWS) -> list[list[tuple[int, np.ndarray]]]:
    """Consecutive tokens batched to about `rows` samples per group: a task per token would cost
    more in scheduling than clustering a token with a handful of samples."""
    groups: list[list[tuple[int, np.ndarray]]] = [[]]
    size = 0
    for token in tokens:
        if size >= rows:
            groups.append([])
            size = 0
        groups[-1].append(token)
        size += len(token[1])
    return [g for g in groups if g]


def cluster_tokens(tokens: Sequence[tuple[int, np.ndarray]], params: Params, workers: int | None = None
                   ) -> list[TokenSenses]:
    """Every token's senses, in the given order, over `workers` threads (default: every core).

    Threads, not processes: faiss releases the GIL while it clusters, so threads use every core
    without copying samples into other processes (bench/cluster.py measured both, see docs/senses.md)."""
    workers = workers or os.cpu_count() or 1
    groups = groups_of(tokens, max(1, min(_GROUP_ROWS, sum(len(x) for _, x in tokens) // (4 * workers) + 1)))
    if workers == 1 or len(groups) == 1:
        saved = faiss.omp_get_max_threads()
        try:
            _one_thread()
            return _run_group(tokens, params)
        finally:
            faiss.omp_set_num_threads(saved)
    with ThreadPoolExecutor(workers, initializer=_one_thread, thread_name_prefix="kmeans") as pool:
        results = list(pool.map(lambda g: _run_group(g, params), groups))
    return [senses for group in results for senses in group]


