"""The durable outbox: every accepted message is stored before the caller hears "accepted"."""

from __future__ import annotations

from ccs.outbox.base import Event, Finish, NewMessage, Record, Store
from ccs.outbox.memory import MemoryStore


def open_store(path: str, sync: str = "normal", threadpool: bool = False,
               batch: int = 2000) -> Store:
    """The store a path names: ':memory:' for MemoryStore, else a SQLite file."""
    if path == ":memory:":
        return MemoryStore()
    from ccs.outbox.sqlite import SqliteStore

    return SqliteStore(path, sync=sync, threadpool=threadpool, batch=batch)


__all__ = ["Event", "Finish", "MemoryStore", "NewMessage", "Record", "Store", "open_store"]
