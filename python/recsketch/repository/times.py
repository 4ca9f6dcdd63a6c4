"""Times as the repository stores them: Unix seconds (float), parsed from what users pass."""

from __future__ import annotations

import datetime as _dt
import math
import numbers
from typing import Any, Union

import numpy as np

__all__ = ["TimeLike", "to_seconds", "duration_seconds"]

TimeLike = Union[float, int, _dt.datetime, _dt.date, np.datetime64, str]


def to_seconds(t: Any, name: str = "timestamp") -> float:
    """Unix seconds from a number, a datetime/date (naive = UTC), a numpy datetime64 or an
    ISO-8601 string; ValueError/TypeError naming ``name`` otherwise."""
    if isinstance(t, (bool, np.bool_)):
        raise TypeError(f"{name} must be a time, got a bool")
    if isinstance(t, numbers.Real):
        v = float(t)
    elif isinstance(t, np.datetime64):
        v = float(t.astype("datetime64[us]").astype(np.int64)) / 1e6
    elif isinstance(t, _dt.datetime):
        v = (t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)).timestamp()
    elif isinstance(t, _dt.date):
        v = _dt.datetime(t.year, t.month, t.day, tzinfo=_dt.timezone.utc).timestamp()
    elif isinstance(t, str):
        try:
            return to_seconds(_dt.datetime.fromisoformat(t), name)
        except ValueError as exc:
            raise ValueError(f"{name}: not an ISO-8601 time: {t!r}") from exc
    else:
        raise TypeError(f"{name} must be a number, datetime, date, datetime64 or ISO string, "
                        f"got {type(t).__name__}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite")
    return v


def duration_seconds(age: Any) -> float:
    """Seconds from a number of seconds or a timedelta."""
    if isinstance(age, _dt.timedelta):
        return age.total_seconds()
    if isinstance(age, numbers.Real) and not isinstance(age, (bool, np.bool_)):
        return float(age)
    raise TypeError(f"a policy age must be seconds or a timedelta, got {type(age).__name__}")
