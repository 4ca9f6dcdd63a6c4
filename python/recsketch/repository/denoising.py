"""Denoising stored sketches: the principal subspace of a selection, fitted chunk by chunk
(``recsketch.denoise``), and the check of a subspace handed to an aggregate.

The fit reads the selected sketches that keep all ``d`` coordinates, in the aggregates' chunks
(at most ``chunk_bytes`` of float32 values at a time), and folds each into a
:class:`recsketch.denoise.SubspaceFitter`: memory is the chunk plus about
``16 d (2 max_rank + 64)`` bytes, whatever the number of sketches. Forgotten (truncated)
sketches are left out of the fit (their missing coordinates would be read as zeros); the
aggregates complete them from the subspace instead.
"""

from __future__ import annotations

import os
from contextlib import closing
from typing import Any, Callable, Optional, Tuple, Union

import numpy as np

from ..denoise import Subspace, SubspaceFitter
from ..erasure import ErasedSketch
from .aggregates import Aggregates
from .store import Rows

__all__ = ["fit_stored", "check_denoise", "check_kept_lengths"]


def fit_stored(aggregates: Aggregates, rows: Rows, fd: int, chunk_bytes: int, d: int,
               fitter: SubspaceFitter, rule: Tuple[str, Union[int, float]]) -> Subspace:
    """The subspace of the selected full-length sketches (``rows`` and ``fd`` from
    ``Store.streamed``; ``fd`` is closed here, on errors too)."""
    full = rows.lengths == d
    if not np.any(full):
        if fd >= 0:
            os.close(fd)
        cut = int(rows.ids.size)
        raise ValueError(f"no selected sketch keeps all {d} coordinates ({cut} selected, every "
                         "one forgotten to a prefix): nothing to fit the subspace on")
    kept = Rows(rows.ids[full], rows.timestamps[full], rows.offsets[full], rows.lengths[full],
                rows.generation, rows.data_end)
    with closing(aggregates.chunks(kept, fd, chunk_bytes)) as chunks:
        for _, values in chunks:
            fitter.add(values)
    name, value = rule
    return fitter.subspace(**{name: value})


def check_denoise(denoise: Any, d: int) -> Optional[Callable[[Any], np.ndarray]]:
    """The chunk transform of an aggregate's ``denoise=`` argument: ``None`` (no denoising) or
    a :class:`Subspace` of this repository's ``d`` (its :meth:`Subspace.project`, which
    completes forgotten sketches from the subspace). Checked before anything is read."""
    if denoise is None:
        return None
    if not isinstance(denoise, Subspace):
        raise TypeError("denoise must be a recsketch.denoise.Subspace (e.g. from "
                        f"Repository.denoiser()) or None, got {type(denoise).__name__}")
    if denoise.d_sketch != d:
        raise ValueError(f"the subspace has d_sketch={denoise.d_sketch}, this repository "
                         f"stores d={d}")

    def transform(s: Union[np.ndarray, ErasedSketch]) -> np.ndarray:
        return denoise.project(s)

    return transform


def check_kept_lengths(denoise: Optional[Subspace], rows: Rows) -> None:
    """A forgotten sketch is completed from the subspace's coefficients fitted on its prefix:
    a prefix shorter than the rank cannot determine them (refused before anything is read)."""
    if denoise is None or rows.ids.size == 0:
        return
    shortest = int(rows.lengths.min())
    if shortest < denoise.rank:
        raise ValueError(f"a selected sketch keeps {shortest} coordinates, fewer than the "
                         f"subspace's rank {denoise.rank}: it cannot be completed; select "
                         "the sketches that keep more (or fit a lower rank)")
