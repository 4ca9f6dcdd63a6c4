"""Searching the stored object sketches (paper §1.1: a recovered object as a fingerprint): the
analytics behind :meth:`Repository.find_object` and :meth:`Repository.find_signed`, over one
snapshot of a module's stored objects (storage: ``objects.py``, ``signed.py``). The facade
reads the query sketch under its Sketcher's lock and retries on a retired snapshot."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..signatures import SignatureSpec, code_positions, code_scores, read_signature
from .objects import ObjectMatches, ObjectStore
from .signed import SignatureTable

__all__ = ["match_objects", "match_signed"]


def _empty() -> ObjectMatches:
    empty = np.zeros(0, np.int64)
    return ObjectMatches(empty, empty, empty, np.zeros(0), np.zeros(0))


def match_objects(objects: ObjectStore, module: str, attribute_dim: int, x: np.ndarray,
                  target: Optional[np.ndarray], k: int, candidates: int) -> ObjectMatches:
    """find_object's search: the ``candidates`` best fingerprint cosines with the attribute
    estimate ``x``, re-ranked on the stored object sketches when ``target`` (the rebuilt
    object sketch) is given; the best ``k``."""
    oid, gid, idx, off, blobs, gen = objects.of_module(module)
    if oid.size == 0:
        return _empty()
    fp = np.frombuffer(b"".join(blobs), np.float32).reshape(oid.size, attribute_dim)
    fscore = fp.astype(np.float64) @ x
    c = min(int(candidates), oid.size)
    top = np.argpartition(-fscore, c - 1)[:c] if c < oid.size else np.arange(oid.size)
    top = top[np.lexsort((oid[top], -fscore[top]))]
    if target is None:
        score = fscore[top]
    else:
        y = objects.read(off[top], gen).astype(np.float64)
        if top.size > 1:
            # what the module's object sketches share (its R[M,2] e_1 channel, the common
            # part of its attributes) dominates raw cosines and tells nothing apart
            y -= y.mean(axis=0)
        norm = np.linalg.norm(y, axis=1)
        score = np.divide(y @ target, norm, out=np.zeros(top.size), where=norm > 0)
        order = np.lexsort((oid[top], -score))
        top, score = top[order], score[order]
    top, score = top[:k], score[:k]
    return ObjectMatches(oid[top], gid[top], idx[top], score, fscore[top])


def match_signed(signed: SignatureTable, objects: ObjectStore, module: str,
                 spec: SignatureSpec, attribute_dim: int, x: np.ndarray, k: int
                 ) -> ObjectMatches:
    """find_signed's search: the code read back from the attribute estimate ``x`` scored
    against every stored signed object's code; the best ``k`` (ties by object id)."""
    read = read_signature(x, attribute_dim - spec.dim, spec)
    soid, keys = signed.of_module(module)
    oid, gid, idx, _, blobs, _ = objects.of_module(module)
    at = np.searchsorted(oid, soid)
    keep = (at < oid.size) & (oid[np.minimum(at, max(oid.size - 1, 0))] == soid) \
        if oid.size else np.zeros(soid.size, bool)
    soid, at = soid[keep], at[keep]
    keys = [key for key, kept in zip(keys, keep.tolist()) if kept]
    if soid.size == 0:
        return _empty()
    score = code_scores(read.code, code_positions(keys, spec)) / np.sqrt(spec.ones)
    fp = np.frombuffer(b"".join(blobs[i] for i in at.tolist()), np.float32).reshape(
        at.size, attribute_dim)
    fscore = fp.astype(np.float64) @ x
    order = np.lexsort((soid, -score))[:int(k)]
    return ObjectMatches(soid[order], gid[at[order]], idx[at[order]], score[order],
                         fscore[order])
