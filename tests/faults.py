"""Fault injection into a Repository's SQLite connection (imported by tests, like scenes.py)."""

from contextlib import contextmanager


class Connection:
    """Delegates to a sqlite3 connection; ``fault(sql)`` runs before each ``execute`` and may
    raise (before the statement, or after it with ``after=True``)."""

    def __init__(self, db, fault, after=False):
        self._db, self._fault, self._after = db, fault, after

    def execute(self, sql, *args):
        if not self._after:
            self._fault(sql)
        out = self._db.execute(sql, *args)
        if self._after:
            self._fault(sql)
        return out

    def __getattr__(self, name):
        return getattr(self._db, name)


@contextmanager
def failing_commit(store, exc, *, after=False):
    """Within the block, the first COMMIT on ``store``'s connection raises ``exc`` (before the
    statement runs, or after it committed with ``after=True``). Yields a list that is non-empty
    once the fault fired; the real connection is back on exit."""
    real = store._db
    fired = []

    def fault(sql):
        if sql == "COMMIT" and not fired:
            fired.append(sql)
            raise exc

    store._db = Connection(real, fault, after=after)
    try:
        yield fired
    finally:
        store._db = real
