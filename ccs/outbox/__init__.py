"""The durable outbox: every accepted message is stored before the caller hears "accepted"."""

from __future__ import annotations

from typing import Any

from ccs.outbox.base import Event, Finish, NewMessage, Record, Store
from ccs.outbox.memory import MemoryStore


def is_redis(path: str) -> bool:
    return path.startswith(("redis://", "rediss://"))


def shown(path: str) -> str:
    """The outbox path for messages: a redis:// URL's password replaced by ***."""
    if is_redis(path) and "@" in path.split("/", 3)[2]:
        scheme, rest = path.split("://", 1)
        auth, host = rest.split("@", 1)
        user = auth.split(":", 1)[0] if ":" in auth else ""
        return f"{scheme}://{user}:***@{host}"
    return path


def open_store(path: str, sync: str = "normal", threadpool: bool = False,
               batch: int = 2000, **redis_options: Any) -> Store:
    """The store a path names: ':memory:' for MemoryStore, redis:// for RedisStore (options:
    reclaim_idle, heartbeat, stream_maxlen), else a SQLite file."""
    if path == ":memory:":
        return MemoryStore()
    if is_redis(path):
        from ccs.outbox.redis import RedisStore

        return RedisStore(path, **redis_options)
    from ccs.outbox.sqlite import SqliteStore

    return SqliteStore(path, sync=sync, threadpool=threadpool, batch=batch)


__all__ = ["Event", "Finish", "MemoryStore", "NewMessage", "Record", "Store", "is_redis",
           "open_store", "shown"]
