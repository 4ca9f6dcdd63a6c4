"""The learned modules of a repository, kept in its SQLite metadata (table ``learned``: the
module's name and its ``LearnedModule.to_bytes``), so that :meth:`Repository.open` restores
them. Written inside a write transaction with the module registry, so a module is recorded
with its registration or not at all."""

from __future__ import annotations

from typing import Dict

from ..learned import LearnedModule
from .store import Store

__all__ = ["LearnedStore"]

_TABLE = "CREATE TABLE IF NOT EXISTS learned(name TEXT PRIMARY KEY, data BLOB NOT NULL)"


class LearnedStore:
    def __init__(self, store: Store):
        self._store = store

    def write(self, module: LearnedModule) -> None:
        """Inside the store's transaction: record ``module`` (its name must be new)."""
        db = self._store.db
        db.execute(_TABLE)
        db.execute("INSERT INTO learned VALUES (?, ?)", (module.name, module.to_bytes()))

    def read_all(self) -> Dict[str, LearnedModule]:
        """Every recorded module, by name (none in a repository that never learned one)."""
        store = self._store
        with store.lock:
            db = store.db
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                          "name = 'learned'").fetchone() is None:
                return {}
            rows = db.execute("SELECT name, data FROM learned ORDER BY name").fetchall()
        out = {}
        for name, data in rows:
            module = LearnedModule.from_bytes(bytes(data), f"learned module {name!r} in "
                                              f"{store.path}")
            if module.name != name:
                raise ValueError(f"learned module {name!r} in {store.path} is named "
                                 f"{module.name!r} inside")
            out[name] = module
        return out
