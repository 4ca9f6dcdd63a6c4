"""A persistent, crash-safe store of sketches (paper Section 1.1, "Sketch Repository").

One concern per module:

- ``store.py``: the data file, the SQLite metadata, crash repair, transactions, reading rows;
- ``index.py``: the usearch prefix index, kept in step with the store, and exact re-ranking;
- ``aggregates.py``: count, mass, mean attributes over many sketches, streamed in chunks;
- ``denoising.py``: the principal subspace of stored sketches (``recsketch.denoise``), fitted
  in chunks, and the checks of an aggregate's ``denoise=``;
- ``clusters.py``: k-means clusters and the concepts new since a time;
- ``explain.py``: which modules or objects make two sketches similar;
- ``forgetting.py``: forgetting policies and the lengths they keep;
- ``objects.py``: object sketches stored with their graphs, and fingerprint search;
- ``learned_store.py``: the learned modules (``recsketch.learned``) kept with the repository;
- ``times.py``: parsing timestamps;
- ``facade.py``: :class:`Repository`, joining them.
"""

from .aggregates import DEFAULT_CHUNK_BYTES
from .clusters import Clusters
from .facade import Repository
from .forgetting import DEFAULT_POLICY, ForgetPolicy
from .objects import ObjectMatches
from .times import TimeLike

__all__ = ["Repository", "Clusters", "ForgetPolicy", "DEFAULT_POLICY", "DEFAULT_CHUNK_BYTES",
           "ObjectMatches", "TimeLike"]
