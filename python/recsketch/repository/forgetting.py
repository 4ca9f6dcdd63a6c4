"""Graceful forgetting (paper Sections 1.1 and 3.1): older sketches keep shorter prefixes.

A policy is a list of ``(age, fraction)`` tiers; the store rewrites the data with the lengths
computed here (:meth:`recsketch.repository.store.Store.rewrite`).
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .._checks import check_real
from .times import duration_seconds

__all__ = ["DEFAULT_POLICY", "ForgetPolicy", "parse_policy", "target_lengths"]

_DAY = 86400.0

# Full for 30 days, a quarter up to a year, a sixteenth after.
DEFAULT_POLICY: Tuple[Tuple[float, float], ...] = ((30 * _DAY, 1.0), (365 * _DAY, 0.25),
                                                    (math.inf, 1.0 / 16))
ForgetPolicy = Sequence[Tuple[Union[float, _dt.timedelta], float]]


def parse_policy(policy: Optional[ForgetPolicy]) -> List[Tuple[float, float]]:
    """``(seconds, fraction)`` tiers, checked: ages increasing, fractions in (0, 1]."""
    tiers = [(duration_seconds(a), check_real(f, "policy fraction"))
             for a, f in (DEFAULT_POLICY if policy is None else policy)]
    if not tiers:
        raise ValueError("policy needs at least one tier")
    for (a, f), prev in zip(tiers, [(-math.inf, 1.0)] + tiers[:-1]):
        if not 0.0 < f <= 1.0:
            raise ValueError(f"policy fractions must be in (0, 1], got {f!r}")
        if math.isnan(a) or a < 0:   # (an infinite last age is a tier for ever)
            raise ValueError(f"policy ages must be >= 0 (not NaN), got {a!r}")
        if a <= prev[0]:
            raise ValueError("policy ages must increase")
    return tiers


def target_lengths(ts: np.ndarray, now: float, tiers: List[Tuple[float, float]], d: int,
                   index_dim: int) -> np.ndarray:
    """Kept length of each sketch dated ``ts``: the fraction of the first tier covering its age
    (the last tier's beyond it), never below ``index_dim`` (the retrieval index needs it)."""
    age = now - ts
    frac = np.full(ts.size, tiers[-1][1])
    for a, f in reversed(tiers):
        frac[age <= a] = f
    return np.maximum(np.ceil(frac * d).astype(np.int64), index_dim)
