"""Learning a module from a cluster of stored sketches (paper §1.1, "Learning New Modules"):
the analytics behind :meth:`Repository.learn_module`, apart from its storage. The facade
selects the past and registers the result (:meth:`Repository.add_learned`)."""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Callable, Dict

import numpy as np

from ..learned import LearnedModule
from .clusters import Clusters
from .times import TimeLike, to_seconds

__all__ = ["check_learn_arguments", "fit_cluster"]


def check_learn_arguments(name: Any, clusters: Any, cluster: Any, since: TimeLike,
                          max_past: Any) -> float:
    """Validate :meth:`Repository.learn_module`'s arguments; returns ``since`` in seconds."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not isinstance(clusters, Clusters):
        raise TypeError(f"clusters must be a Clusters (repo.clusters(...)), got "
                        f"{type(clusters).__name__}")
    if isinstance(cluster, bool) or not isinstance(cluster, numbers.Integral) \
            or not 0 <= cluster < clusters.centroids.shape[0]:
        raise ValueError(f"cluster must be an integer in [0, "
                         f"{clusters.centroids.shape[0]}), got {cluster!r}")
    if isinstance(max_past, bool) or not isinstance(max_past, numbers.Integral) \
            or max_past < 1:
        raise ValueError(f"max_past must be a positive integer, got {max_past!r}")
    if since is None:
        raise TypeError("since must be a time (the past the cluster is told apart from "
                        "is what is dated before it), got None")
    return to_seconds(since, "since")


def fit_cluster(name: str, clusters: Clusters, cluster: int, t: float, past_ids: np.ndarray,
                get: Callable[[np.ndarray], np.ndarray],
                lengths: Callable[[np.ndarray], np.ndarray], d: int,
                options: Dict[str, Any]) -> LearnedModule:
    """Fit a module on the cluster's stored sketches against ``past_ids``'. A RuntimeWarning
    if the cluster is not one of ``clusters.new_since(t)``. When forgetting has cut some of
    these sketches, the detector is fitted on the prefix every one of them keeps."""
    cluster = int(cluster)
    if cluster not in clusters.new_since(t):
        ts = clusters.timestamps[clusters.labels == cluster]
        warnings.warn(f"cluster {cluster} is not among clusters.new_since(since): "
                      f"{np.mean(ts >= t):.0%} of its members are dated since then",
                      RuntimeWarning, stacklevel=3)
    member_ids = clusters.members(cluster)
    members, past = get(member_ids), get(past_ids)
    # zeros standing for forgotten coordinates must not be taken for novelty
    kept = int(min(lengths(member_ids).min(), lengths(past_ids).min()))
    options = dict(options)
    if kept < d:
        options.setdefault("prefix", kept)
    return LearnedModule.fit(name, members, past, **options)
