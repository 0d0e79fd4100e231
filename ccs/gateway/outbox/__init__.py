"""The durable outbox: every accepted message is stored before the caller hears "accepted"."""

from __future__ import annotations

from typing import Any

from ccs.gateway.outbox.base import Event, Finish, NewMessage, Record, Store
from ccs.gateway.outbox.memory import MemoryStore

REDIS_SCHEMES = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")


def is_redis(path: str) -> bool:
    return path.startswith(REDIS_SCHEMES)


def shown(path: str) -> str:
    """The outbox path for messages and `ccs settings`: a Redis URL's password as ***."""
    if not is_redis(path):
        return path
    scheme, rest = path.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    if "?" in netloc:  # redis://host:port?prefix=P (no path)
        netloc, q, more = netloc.partition("?")
        sep, tail = "", q + more + (sep + tail if sep else "")
    if "@" not in netloc:
        return path
    auth, host = netloc.rsplit("@", 1)
    user = auth.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{sep}{tail}"


def open_store(path: str, sync: str = "normal", threadpool: bool = False,
               batch: int = 2000, **redis_options: Any) -> Store:
    """The store a path names: ':memory:' for MemoryStore, redis:// for RedisStore (options:
    reclaim_idle, heartbeat, stream_maxlen), else a SQLite file."""
    if path == ":memory:":
        return MemoryStore()
    if is_redis(path):
        from ccs.gateway.outbox.redis import RedisStore

        return RedisStore(path, **redis_options)
    from ccs.gateway.outbox.sqlite import SqliteStore

    return SqliteStore(path, sync=sync, threadpool=threadpool, batch=batch)


__all__ = ["Event", "Finish", "MemoryStore", "NewMessage", "Record", "Store", "is_redis",
           "open_store", "shown"]
