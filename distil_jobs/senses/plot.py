"""`senses.png`: a few tokens' samples in 2-D, coloured by the sense they fall in, centroids marked.

One panel per token, each with its own PCA: senses of different tokens live in different regions
of the space, and a shared projection would squeeze each token into a corner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class TokenView:
    word: str
    token: str  # the sub-token the word's samples are of
    samples: np.ndarray  # [n, dim]
    centroids: np.ndarray  # [senses, dim]


def nearest(samples: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    d = (samples ** 2).sum(1)[:, None] - 2 * samples @ centroids.T + (centroids ** 2).sum(1)[None, :]
    return d.argmin(1)


def pca_2d(samples: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both projected on the samples' first two principal axes."""
    mean = samples.mean(0)
    _, _, vt = np.linalg.svd(samples - mean, full_matrices=False)
    axes = vt[:2].T if vt.shape[0] >= 2 else np.eye(samples.shape[1], 2)
    return (samples - mean) @ axes, (centroids - mean) @ axes


def plot_senses(views: list[TokenView], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # batch jobs have no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(views), figsize=(4.5 * len(views), 4.2), squeeze=False)
    for ax, view in zip(axes[0], views, strict=True):
        x = view.samples.astype(np.float64)
        c = view.centroids.astype(np.float64)
        labels = nearest(x, c)
        px, pc = pca_2d(x, c)
        ax.scatter(px[:, 0], px[:, 1], c=labels, cmap="tab10", s=8, alpha=0.6, vmin=0, vmax=max(9, len(c) - 1))
        ax.scatter(pc[:, 0], pc[:, 1], c=np.arange(len(c)), cmap="tab10", marker="X", s=140, edgecolors="black",
                   vmin=0, vmax=max(9, len(c) - 1))
        ax.set_title(f"{view.word} ({view.token!r}): {len(x)} samples, {len(c)} senses", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version string: same input, same bytes
    plt.close(fig)
