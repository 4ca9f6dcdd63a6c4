"""k-means clusters of stored sketches, and which concepts emerged since a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from .times import TimeLike, to_seconds

__all__ = ["Clusters", "kmeans"]


@dataclass(frozen=True)
class Clusters:
    """k-means clusters of stored sketches (on their normalised index prefixes).

    ``ids[i]`` belongs to cluster ``labels[i]``; ``centroids`` has one row per cluster;
    ``first_seen``/``last_seen`` are the earliest/latest member timestamps of each cluster.
    """

    ids: np.ndarray
    labels: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    first_seen: np.ndarray
    last_seen: np.ndarray
    timestamps: np.ndarray

    def members(self, cluster: int) -> np.ndarray:
        return self.ids[self.labels == cluster]

    def new_since(self, t: TimeLike, fraction: float = 0.9) -> List[int]:
        """Clusters at least ``fraction`` of whose members are dated ``t`` or later: the
        concepts that emerged since then, largest first."""
        since = to_seconds(t, "t")
        out = []
        for c in range(self.centroids.shape[0]):
            ts = self.timestamps[self.labels == c]
            if ts.size and np.mean(ts >= since) >= fraction:
                out.append(c)
        return sorted(out, key=lambda c: -self.sizes[c])


def kmeans(ids: np.ndarray, ts: np.ndarray, prefixes: np.ndarray, k: int, seed: int) -> Clusters:
    """k-means (scikit-learn) on the unit-normalised rows of ``prefixes`` ``(n, index_dim)``."""
    from sklearn.cluster import KMeans

    x = prefixes.astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    km = KMeans(n_clusters=int(k), n_init=4, random_state=seed).fit(x)
    labels = km.labels_.astype(np.int64)
    sizes = np.bincount(labels, minlength=k)
    first = np.array([ts[labels == c].min() if sizes[c] else np.nan for c in range(k)])
    last = np.array([ts[labels == c].max() if sizes[c] else np.nan for c in range(k)])
    return Clusters(ids, labels, km.cluster_centers_, sizes, first, last, ts)
