"""Denoising stored sketches: the principal subspace of a selection, fitted chunk by chunk
(``recsketch.denoise``), and the check of what an aggregate's ``denoise=`` is given (a
subspace to project on, or a ``recsketch.guided.GuidedReader``).

The fit reads the selected sketches that keep all ``d`` coordinates, in the aggregates' chunks
(at most ``chunk_bytes`` of float32 values at a time), and folds each into a
:class:`recsketch.denoise.SubspaceFitter`: memory is the chunk plus about
``32 d (k + m) + 56 (k + m)^2`` bytes (``k + m <= 2 max(max_rank, 64)``; a ``d x d`` SVD
when that reaches ``d``: see :class:`recsketch.denoise.SubspaceFitter`), whatever the number
of sketches. Forgotten (truncated)
sketches are left out of the fit (their missing coordinates would be read as zeros); the
aggregates complete them from the subspace instead.
"""

from __future__ import annotations

import os
from contextlib import closing
from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

import numpy as np

from ..denoise import Identity, Subspace, SubspaceFitter, check_same_sketcher
from ..erasure import ErasedSketch
from ..guided import GuidedReader
from .aggregates import Aggregates
from .store import Rows

__all__ = ["DenoisedRead", "fit_stored", "check_denoise", "check_kept_lengths"]


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


class DenoisedRead(NamedTuple):
    """How an aggregate reads its chunks under ``denoise=``: ``transform`` (a projection,
    then the Sketcher's ``method``) or ``reader`` (the subspace-guided joint fit)."""

    transform: Optional[Callable[[Any], np.ndarray]]
    reader: Optional[GuidedReader]
    subspace: Optional[Subspace]


def check_denoise(denoise: Any, d: int, method: str, fan_in: Optional[int],
                  identity: Identity) -> DenoisedRead:
    """Check an aggregate's ``denoise=`` before anything is read: ``None``; a
    :class:`Subspace` of this repository's ``d`` (each chunk projected, a forgotten sketch
    completed, then read by ``method``); or a :class:`GuidedReader` (``method="joint"`` only,
    and ``fan_in`` its own or None: the fit restricted to the words the subspace spans).
    Either must come from this repository's Sketcher (``identity``,
    :func:`recsketch.denoise.sketcher_identity`): another seed, family, block size or density
    gives other words, and is refused naming both (a Subspace fitted on bare arrays records
    none and is checked on ``d`` only)."""
    if denoise is None:
        return DenoisedRead(None, None, None)
    if isinstance(denoise, GuidedReader):
        if method != "joint":
            raise ValueError(f"a GuidedReader is the joint read-out on the subspace's words: "
                             f"pass method='joint' with it, not {method!r} (or pass a "
                             "Subspace to project the sketches before any method)")
        if fan_in is not None and fan_in != denoise.fan_in:
            raise ValueError(f"fan_in={fan_in} differs from the GuidedReader's "
                             f"{denoise.fan_in} (its candidates were searched up to that)")
        if denoise.d_sketch != d:
            raise ValueError(f"the GuidedReader has d_sketch={denoise.d_sketch}, this "
                             f"repository stores d={d}")
        check_same_sketcher(denoise.sketcher_identity, identity, "the GuidedReader",
                            "this repository")
        return DenoisedRead(None, denoise, None)
    if not isinstance(denoise, Subspace):
        raise TypeError("denoise must be a recsketch.denoise.Subspace (Repository.denoiser()), "
                        "a recsketch.guided.GuidedReader (Repository.guided_reader()) or None, "
                        f"got {type(denoise).__name__}")
    if denoise.d_sketch != d:
        raise ValueError(f"the subspace has d_sketch={denoise.d_sketch}, this repository "
                         f"stores d={d}")
    check_same_sketcher(denoise.sketcher_identity, identity, "the subspace", "this repository")

    def transform(s: Union[np.ndarray, ErasedSketch]) -> np.ndarray:
        return denoise.project(s)

    return DenoisedRead(transform, None, denoise)


def check_kept_lengths(how: DenoisedRead, rows: Rows) -> None:
    """A forgotten sketch is read through the subspace by a least-squares fit on its prefix:
    a prefix shorter than the fit's unknowns (the subspace's rank, or the GuidedReader's
    unknowns) cannot determine them (refused before anything is read)."""
    need = (how.subspace.rank if how.subspace is not None else
            how.reader.unknowns if how.reader is not None else 0)
    if need == 0 or rows.ids.size == 0:
        return
    shortest = int(rows.lengths.min())
    if shortest < need:
        raise ValueError(f"a selected sketch keeps {shortest} coordinates, fewer than the "
                         f"{need} unknowns of the denoised read (the subspace's rank or the "
                         "GuidedReader's unknowns): it cannot be completed; select the "
                         "sketches that keep more (or fit a lower rank)")
