"""Per-token k-means with faiss: one token's samples → its senses (centroids and sample counts).

Each token is clustered on its own (a sense belongs to one token), from a fixed initialisation:
k distinct samples drawn with a generator seeded by (seed, token id). A token's result therefore
depends only on its samples and the seed, never on which shard, worker or order ran it, so shards
merge into exactly the dictionary of one unsharded run. The CUDA image would swap faiss-cpu for
faiss-gpu (the same `faiss.Clustering`, trained with a GPU index); here it is faiss-cpu.
`cluster_token` is one token's whole path; `senses.range_kmeans` runs a token range's tokens
through the same functions in batches (and must give the same bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from distil_jobs.senses.mcl import count_clusters, skd_k

K_RULES = ("fixed", "skd")


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


def seeding_draws(rng: np.random.Generator, n: int, k: int) -> tuple[int, np.ndarray]:
    """The random numbers k-means++ seeding takes, drawn up front in the order a step-by-step loop would
    draw them (the first centre, then `trials` uniforms per further centre; consecutive `random` calls
    equal one call for their total), so many tokens can be seeded together by `seed_batch`."""
    trials = 2 + int(np.log(k))
    first = int(rng.integers(n))
    return first, rng.random((k - 1) * trials).reshape(k - 1, trials)


def seed_batch(x: np.ndarray, first: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Greedy k-means++ seeding of B tokens at once, each with the same number n of distinct samples:
    x [B, n, dim] float32, first [B], uniforms [B, k - 1, trials] from `seeding_draws` → [B, k, dim].

    Each next centre is the best of `trials` candidates drawn in proportion to the squared distance to
    the nearest centre so far, as scikit-learn does it (random samples as centres left about 7% more
    inertia after 20 iterations). One numpy call per step for the whole batch, not per token: most
    tokens have tens of samples, where the per-call overhead was most of the seeding's time. Every
    product is one BLAS call per token of the token's own shape, so a token's centres do not depend on
    which tokens share its batch (a batch of one, `initial_centroids`, gives the same bytes)."""
    b, n = x.shape[0], x.shape[1]
    rows = np.arange(b)
    norms = (x * x).sum(2)  # [B, n]
    chosen = np.empty((b, uniforms.shape[1] + 1), np.int64)
    chosen[:, 0] = first
    centre = x[rows, first][:, :, None]  # [B, dim, 1]
    closest = np.maximum(norms - 2 * (x @ centre)[:, :, 0] + norms[rows, first][:, None], 0.0)
    for step in range(uniforms.shape[1]):
        cumulative = np.cumsum(closest, axis=1, dtype=np.float64)
        targets = uniforms[:, step] * cumulative[:, -1:]  # [B, trials]
        # searchsorted(side="right") per token, for all tokens at once: the count of prefix sums <= target
        picks = np.minimum((cumulative[:, None, :] <= targets[:, :, None]).sum(2), n - 1)  # [B, trials]
        dist = np.maximum(norms[:, None, :] - 2 * x[rows[:, None], picks] @ x.transpose(0, 2, 1)
                          + norms[rows[:, None], picks][:, :, None], 0.0)  # [B, trials, n]
        candidate = np.minimum(closest[:, None, :], dist)
        best = np.argmin(candidate.sum(2), axis=1)
        chosen[:, step + 1] = picks[rows, best]
        closest = candidate[rows, best]
    return x[rows[:, None], chosen]


def initial_centroids(distinct: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k of the (more than k) distinct samples by k-means++ seeding: `seed_batch` on a batch of one."""
    x = np.ascontiguousarray(distinct, dtype=np.float32)
    first, uniforms = seeding_draws(rng, x.shape[0], k)
    return seed_batch(x[None], np.array([first]), uniforms[None])[0]


def clustering_parameters(n: int, k: int, niter: int, seed: int) -> faiss.ClusteringParameters:
    cp = faiss.ClusteringParameters()
    cp.niter, cp.seed, cp.verbose = niter, seed, False
    # max_points_per_centroid >= n/k: faiss would otherwise train on a subsample of a frequent token.
    cp.max_points_per_centroid, cp.min_points_per_centroid = max(n // k + 1, 256), 1
    return cp


def kmeans(x: np.ndarray, init: np.ndarray, niter: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`niter` Lloyd iterations (faiss's clustering) from `init` on every sample: centroids, each sample's
    label and its squared distance to its centroid.

    faiss's `Clustering` and `IndexFlatL2` directly, as `faiss.Kmeans.train` uses them, without its
    per-call Python (it copies every iteration's statistics into dicts). After training the index holds
    the final centroids, so the final assignment searches it instead of building a second index. (The
    CUDA image would pass a `GpuIndexFlatL2` as the index; not measured here.)"""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, dim = x.shape
    k = init.shape[0]
    clus = faiss.Clustering(dim, k, clustering_parameters(n, k, niter, seed))
    faiss.copy_array_to_vector(np.ascontiguousarray(init, dtype=np.float32).ravel(), clus.centroids)
    index = faiss.IndexFlatL2(dim)
    clus.train(x, index)
    centroids = faiss.vector_float_to_array(clus.centroids).reshape(k, dim)
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
    return clustered(token_id, x, initial_centroids(distinct, k, rng), params)


def clustered(token_id: int, x: np.ndarray, init: np.ndarray, params: Params) -> TokenSenses:
    """k-means of one token's float32 samples from its seeded centres; empty senses dropped."""
    k = init.shape[0]
    centroids, labels, dist = kmeans(x, init, params.niter, params.seed)
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    keep = counts > 0
    return TokenSenses(token_id, centroids[keep], counts[keep], float(dist.sum()), x.shape[0], k)
