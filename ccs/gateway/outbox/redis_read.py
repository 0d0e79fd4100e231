"""Reading the Redis outbox's public streams: `ccs tail` over every shard, and result(id)
for any process (the outcome stream of the message's shard), through restarts and failovers.

Also what the store and its readers share: which errors mean "Redis cannot answer now"
(DOWN), guarded (those errors as StoreUnavailable) and shard_of.
"""

from __future__ import annotations

import functools
import json
import logging
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import gevent
import redis
from gevent.queue import Queue

from ccs.gateway.outbox import shown
from ccs.gateway.outbox.base import StoreUnavailable, outcome_of
from ccs.outcome import Outcome, SendResult, Status

log = logging.getLogger(__name__)

# Errors that mean "Redis cannot take this now" (down, loading, failing over), not "bad call".
DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError,
        redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError,
        redis.exceptions.ReadOnlyError, redis.exceptions.BusyLoadingError,
        redis.exceptions.RedisClusterException)  # the last: no node reachable, slot uncovered
T = TypeVar("T")


def shard_of(id: str, shards: int) -> int:
    """The shard a message id (or event key) belongs to."""
    return zlib.crc32(id.encode()) % shards


def outcome_from_stream(f: Mapping[str, Any]) -> Outcome:
    """The Outcome an entry of the outcome stream stands for."""
    return Outcome(Status(f["status"]), via=f.get("via") or "outbox", to=f.get("to") or None,
                   message_id=f.get("provider_message_id") or f["id"], error=f.get("error"),
                   description=f.get("description"), canonical_id=f.get("canonical_id"))


def guarded(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn "Redis cannot answer now" into StoreUnavailable and keep healthy() current."""

    @functools.wraps(fn)
    def call(self: Any, *a: Any, **kw: Any) -> T:
        try:
            out = fn(self, *a, **kw)
        except DOWN as exc:
            self._down(exc)
            raise StoreUnavailable(f"the outbox at {shown(self.source)} is unavailable "
                                   f"({type(exc).__name__}: {exc}); try again shortly",
                                   retry_after=self.retry_after) from exc
        self.down_since = None
        return out

    return call


class Readers:
    """The stream-reading half of RedisStore (it provides redis, ps, shards, get, _down)."""

    redis: Any
    ps: list[str]
    shards: int
    retry_after: float
    _closed: bool
    _waiters: dict[str, list[SendResult]]
    _followers: dict[int, gevent.Greenlet]
    _down: Callable[[BaseException], None]  # RedisStore's: marks Redis down
    get: Callable[[str], Any]  # RedisStore.get

    def _last_ids(self, keys: Sequence[str]) -> dict[str, str]:
        out = {}
        for key in keys:
            try:
                out[key] = self.redis.xinfo_stream(key)["last-generated-id"]
            except redis.ResponseError:  # no such stream yet
                out[key] = "0-0"
        return out

    def tail(self, kinds: Sequence[str], block_ms: int = 1000, start: str = "$"
             ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Follow the public streams of every shard from now (or `start`): (kind, data)."""
        per_shard = []
        for p in self.ps:
            keys = [f"{p}s:{k}" for k in kinds]
            # resolved at the call, so nothing between two reads is missed
            per_shard.append(self._last_ids(keys) if start == "$" else dict.fromkeys(keys, start))
        return self._follow(per_shard, block_ms)

    def _follow(self, per_shard: list[dict[str, str]], block_ms: int
                ) -> Iterator[tuple[str, dict[str, Any]]]:
        # One reader per shard: a cluster refuses one XREAD over keys of several slots.
        out: Queue = Queue(1000)

        def read(pos: dict[str, str]) -> None:
            for row in self._read(pos, block_ms, lambda: True):
                out.put(row)

        readers = [gevent.spawn(read, pos) for pos in per_shard]
        try:
            while not self._closed:
                key, f = out.get()
                data = json.loads(f.pop("body")) if "body" in f else {}
                yield key.split("}:s:", 1)[1], {**f, **data}
        finally:
            gevent.killall(readers)

    # outcomes for any process: the shard's outcome stream
    def result(self, id: str) -> SendResult:
        """A SendResult that resolves when message `id` has its outcome, whoever sends it
        (this process, another gateway); KeyError when no such message is stored."""
        res = SendResult(id)
        k = shard_of(id, self.shards)
        self._waiters.setdefault(id, []).append(res)
        try:
            self._follow_outcomes(k)  # from before the record is read: no outcome falls between
            r = self.get(id)
        except BaseException:
            self._drop_waiter(id, res)
            raise
        if r is None or r.state not in ("queued", "in_flight"):
            self._drop_waiter(id, res)
            if r is None:
                raise KeyError(f"no message {id!r} in the outbox")
            res.resolve(outcome_of(r))
        return res

    def _drop_waiter(self, id: str, res: SendResult) -> None:
        waiting = self._waiters.get(id, [])
        if res in waiting:
            waiting.remove(res)
        if not waiting:
            self._waiters.pop(id, None)

    @guarded
    def _follow_outcomes(self, k: int) -> None:
        if k in self._followers:
            return
        key = f"{self.ps[k]}s:outcome"
        pos = self._last_ids([key])
        self._followers[k] = gevent.spawn(self._outcomes, k, pos)

    def _outcomes(self, k: int, pos: dict[str, str]) -> None:
        try:
            for _, f in self._read(pos, 1000, lambda: any(
                    shard_of(i, self.shards) == k for i in self._waiters)):
                for res in self._waiters.pop(f.get("id", ""), []):
                    res.resolve(outcome_from_stream(f))
        finally:
            self._followers.pop(k, None)

    def _read(self, pos: dict[str, str], block_ms: int, wanted: Callable[[], bool]
              ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Entries after `pos` (moved on as they come) while open and wanted(); an unavailable
        Redis is asked again after retry_after."""
        while not self._closed and wanted():
            try:
                got = self.redis.xread(pos, block=block_ms) or []
            except redis.ResponseError as exc:
                # A master demoted (failover) while the read was blocked answers UNBLOCKED;
                # the cluster client then finds the new master on the next call.
                if not str(exc).startswith("UNBLOCKED"):
                    raise
                gevent.sleep(self.retry_after)
                continue
            except DOWN as exc:
                self._down(exc)
                gevent.sleep(self.retry_after)
                continue
            for key, rows in got:
                for entry, f in rows:
                    pos[key] = entry
                    yield key, f

