"""Markov clustering (MCL) on a sparse k-nearest-neighbour graph: how `--k-rule skd` counts a token's senses.

The paper (Wang et al., ACL Findings 2025) lets MCL find m clusters in a token's samples and
derives k from m. Dense MCL is cubic in the samples, so here the graph is sparse (each sample
linked to its `neighbours` most cosine-similar samples) and the samples are capped; expansion is a
sparse matrix square, so each iteration costs about n·neighbours² instead of n³.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

NEIGHBOURS = 10
MAX_SAMPLES = 500  # MCL's cost grows fast with n; 500 samples already show a token's structure
PRUNE = 1e-4  # entries below this are dropped after inflation: they keep the matrix sparse


def knn_graph(x: np.ndarray, neighbours: int = NEIGHBOURS) -> sp.csr_matrix:
    """Symmetric graph linking each row to its most cosine-similar rows (weights: cosine, clipped at 0),
    with self-loops, which MCL needs to converge without oscillating."""
    n = x.shape[0]
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T  # n <= MAX_SAMPLES, so the dense similarity is small
    np.fill_diagonal(sim, -np.inf)
    k = min(neighbours, n - 1)
    cols = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k > 0 else np.empty((n, 0), dtype=np.int64)
    rows = np.repeat(np.arange(n), k)
    weights = np.maximum(sim[rows, cols.ravel()], 0.0)
    graph = sp.csr_matrix((weights, (rows, cols.ravel())), shape=(n, n))
    graph = graph.maximum(graph.T) + sp.identity(n, format="csr")
    return graph.tocsr()


def _normalize_columns(m: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(m.sum(axis=0)).ravel()
    sums[sums == 0] = 1.0
    return (m @ sp.diags(1.0 / sums)).tocsr()


def mcl(graph: sp.spmatrix, inflation: float = 2.0, prune: float = PRUNE, max_iter: int = 100,
        tol: float = 1e-6) -> np.ndarray:
    """Cluster labels (0..m-1) of the graph's nodes: expansion by sparse squaring, inflation,
    pruning, until the matrix stops changing; clusters are read off the attractor rows."""
    m = _normalize_columns(sp.csr_matrix(graph, dtype=np.float64))
    for _ in range(max_iter):
        previous = m
        m = m @ m  # expansion 2: flow spreads along paths of length two
        m = m.power(inflation)  # inflation: strong flows grow, weak ones fade
        m = _normalize_columns(m)
        m.data[m.data < prune] = 0.0
        m.eliminate_zeros()
        m = _normalize_columns(m)
        if abs(m - previous).max() < tol:
            break
    return _clusters(m)


def _clusters(m: sp.csr_matrix) -> np.ndarray:
    """Attractors are nodes that keep flow to themselves; the nodes an attractor's row reaches form
    its cluster. Attractors sharing a row support (a split cluster) are one cluster."""
    n = m.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    seen: dict[tuple[int, ...], int] = {}
    diagonal = m.diagonal()
    for node in np.flatnonzero(diagonal > 0):
        members = tuple(int(c) for c in m.getrow(node).indices)
        label = seen.setdefault(tuple(sorted(members)), len(seen))
        for member in members:
            if labels[member] < 0:
                labels[member] = label
    for node in np.flatnonzero(labels < 0):  # not reached by any attractor (rare, after pruning): its own
        labels[node] = len(seen)
        seen[(int(node),)] = labels[node]
    return labels


def count_clusters(x: np.ndarray, rng: np.random.Generator, max_samples: int = MAX_SAMPLES,
                   neighbours: int = NEIGHBOURS) -> int:
    """m, the number of MCL clusters among (at most `max_samples` of) a token's samples."""
    if x.shape[0] > max_samples:
        x = x[np.sort(rng.choice(x.shape[0], max_samples, replace=False))]
    if x.shape[0] < 2:
        return x.shape[0]
    return int(mcl(knn_graph(x.astype(np.float32), neighbours)).max()) + 1


def skd_k(m: int) -> int:
    """The paper's rule: k = 0.1·m for m <= 900 clusters, else 0.4·m, and never fewer than 5."""
    return max(5, round((0.1 if m <= 900 else 0.4) * m))
