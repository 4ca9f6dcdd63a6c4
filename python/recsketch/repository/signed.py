"""Object signatures in the repository (``recsketch.signatures``): the key of every object
stored from a signed graph, and the signature lookup.

Storage: table ``signatures`` (object id, module, 16-byte key) in ``repo.sqlite``, and the
repository's :class:`SignatureSpec` in table ``signature_spec`` (one row, fixed by the first
signed add: the code positions of a key depend on it). Written inside the transaction that
stores the objects (``Store.append``'s hook), deleted with them.
"""

from __future__ import annotations

import json
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..signatures import SignatureSpec
from .store import Store

__all__ = ["SignatureTable"]

_TABLES = ("CREATE TABLE IF NOT EXISTS signatures(oid INTEGER PRIMARY KEY, "
           "module TEXT NOT NULL, key BLOB NOT NULL)",
           "CREATE INDEX IF NOT EXISTS signatures_module ON signatures(module)",
           "CREATE TABLE IF NOT EXISTS signature_spec(one INTEGER PRIMARY KEY CHECK (one = 1), "
           "spec TEXT NOT NULL)")


class SignatureTable:
    def __init__(self, store: Store):
        self._store = store

    def _has(self, table: str) -> bool:
        return self._store.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                      "name = ?", (table,)).fetchone() is not None

    def spec(self) -> Optional[SignatureSpec]:
        """The repository's signature spec (None before the first signed add)."""
        with self._store.lock:
            if not self._has("signature_spec"):
                return None
            row = self._store.db.execute("SELECT spec FROM signature_spec").fetchone()
        return None if row is None else SignatureSpec(*json.loads(row[0]))

    def write(self, spec: SignatureSpec, oids: Sequence[int], modules: Sequence[str],
              keys: Sequence[bytes]) -> None:
        """Inside the write transaction: record the keys of new objects (and the spec, which
        must be the repository's)."""
        db = self._store.db
        for q in _TABLES:
            db.execute(q)
        row = db.execute("SELECT spec FROM signature_spec").fetchone()
        if row is None:
            db.execute("INSERT INTO signature_spec VALUES (1, ?)", (json.dumps(list(spec)),))
        elif SignatureSpec(*json.loads(row[0])) != spec:
            raise ValueError(f"this repository signs objects with {json.loads(row[0])} "
                             f"(dim, ones, angle), not {list(spec)}")
        db.executemany("INSERT INTO signatures VALUES (?, ?, ?)",
                       [(int(o), m, bytes(k)) for o, m, k in zip(oids, modules, keys)])

    def delete_orphans(self) -> None:
        """Inside the delete transaction, after the objects' rows: drop the keys of objects
        that are gone."""
        if self._has("signatures"):
            self._store.db.execute("DELETE FROM signatures WHERE oid NOT IN "
                                   "(SELECT oid FROM objects)")

    def of_module(self, module: str) -> Tuple[np.ndarray, List[bytes]]:
        """(object ids, keys) of the module's signed objects."""
        with self._store.lock:
            self._store.check_open()
            if not self._has("signatures"):
                return np.zeros(0, np.int64), []
            rows = self._store.db.execute("SELECT oid, key FROM signatures WHERE module = ? "
                                          "ORDER BY oid", (module,)).fetchall()
        return np.asarray([r[0] for r in rows], np.int64), [bytes(r[1]) for r in rows]
