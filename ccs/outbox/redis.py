"""The Redis outbox: many gateway processes share one queue (Redis Streams, consumer groups).

Each lane is a stream read by the consumer group "gw"; each gateway process is a consumer.
The message record (state, attempts, outcome) is a hash beside it; every state change is one
Lua script (ccs.outbox.redis_lua), so records, counts and stream entries move together.
Outcomes, upstream messages, receipts and token events are appended to public streams
P:s:<kind> that apps and `ccs tail` read.

Many processes, so two Store semantics change (documented in README "Many gateways"):
- recover() at open re-queues only what consumers WITHOUT a live heartbeat held; a live
  gateway's in-flight messages are its own.
- a gateway that dies without a clean stop leaves its entries pending; any other gateway's
  claim() takes them over with XAUTOCLAIM once idle for `reclaim_idle` seconds (resent + 1).
  A live gateway keeps its held entries' idle time low from its heartbeat (XCLAIM to itself),
  so a message retried for long is not taken from a healthy process.

gevent: redis-py does blocking socket I/O through the stdlib `socket` module. Without
monkey-patching that would block the hub, so connections are made with gevent.socket
(GeventConnection below) and each call waits cooperatively. Measured on the shared 2-core
machine (scripts/bench_scale.py prints it): a PING round trip of 30-85 us on a gevent socket
against 55-150 us when each call goes through gevent's threadpool (two thread switches per
call); tests/test_outbox_redis.py checks that a greenlet keeps running during a blocking
XREAD. With patch_all() the stdlib socket is gevent's anyway, so both modes run the same code.
redis-py's pool connects outside its RLock (a thread lock, shared by all greenlets).
Not for Redis Cluster: scripts touch keys built from message ids.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket as std_socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import gevent
import redis
from gevent import socket as gsocket

from ccs.lease import Leases
from ccs.outbox import redis_lua as lua
from ccs.outbox import shown
from ccs.outbox.base import (
    STATES,
    Event,
    Finish,
    NewMessage,
    Record,
    Store,
    dumps,
    load_payload,
)
from ccs.settings import ConfigError

log = logging.getLogger(__name__)

GROUP = "gw"
CHUNK = 500  # messages per script call: keeps each atomic step short for other clients
EVENT_HOLD = 60.0  # seconds a handed-out event is hidden from other gateways


class GeventConnection(redis.connection.Connection):
    """A redis-py connection on a gevent socket: waits yield to the hub, patched or not."""

    def _connect(self) -> Any:
        sock = gsocket.create_connection((self.host, self.port),
                                         timeout=self.socket_connect_timeout)
        sock.setsockopt(std_socket.IPPROTO_TCP, std_socket.TCP_NODELAY, 1)
        sock.settimeout(self.socket_timeout)
        return sock


def split_url(url: str) -> tuple[str, str]:
    """(redis URL without our own options, key prefix) from redis://host:port/db?prefix=P."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ConfigError("outbox.path", f"only redis:// URLs are supported (no TLS), got "
                          f"{shown(url)!r}")
    query = parse_qsl(parts.query)
    prefix = dict(query).get("prefix", "ccs")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def connect(url: str) -> redis.Redis:
    """A client for `url` whose connections use gevent sockets."""
    # socket_timeout: a Redis that stops answering fails the call (the child restarts) instead
    # of hanging it; blocking reads here wait at most a few seconds.
    return redis.Redis.from_url(url, decode_responses=True, connection_class=GeventConnection,
                                socket_connect_timeout=5, socket_timeout=30,
                                health_check_interval=30)


def _num(v: Any, kind: type = float) -> Any:
    return kind(v) if v not in (None, "") else None


def _record(id: str, d: Mapping[str, Any]) -> Record:
    return Record(id=id, lane=d["lane"], payload=load_payload(d["payload"]), state=d["state"],
                  to=d.get("to"), attempts=int(d.get("attempts") or 0),
                  resent=int(d.get("resent") or 0), created_at=_num(d.get("created_at")) or 0.0,
                  updated_at=_num(d.get("updated_at")) or 0.0,
                  expires_at=_num(d.get("expires_at")), via=d.get("via"),
                  provider_message_id=d.get("provider_message_id"), error=d.get("error"),
                  description=d.get("description"), canonical_id=d.get("canonical_id"))


class RedisStore(Store):
    def __init__(self, url: str, *, reclaim_idle: float = 30.0, heartbeat: float = 5.0,
                 stream_maxlen: int = 1_000_000, record_ttl: float = 0.0,
                 name: str | None = None) -> None:
        if reclaim_idle < 2 * heartbeat:
            raise ConfigError("outbox.reclaim_idle", f"must be at least twice outbox.heartbeat "
                              f"({heartbeat}s), got {reclaim_idle}")
        self.source = url  # as configured, prefix included
        self.url, prefix = split_url(url)
        self.p = prefix + ":"
        self.redis = connect(self.url)
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise ConfigError("outbox.path", f"cannot reach Redis at {shown(self.url)}: {exc}"
                              ) from None
        self.reclaim_idle = reclaim_idle
        self.heartbeat = heartbeat
        self.maxlen = stream_maxlen
        self.record_ttl = record_ttl  # seconds a finished record is kept (0: for ever)
        self.consumer = name or f"{std_socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.reclaimed = 0  # messages this process took over from a silent gateway
        self._s = {n: self.redis.register_script(getattr(lua, n)) for n in (
            "ADD", "CLAIM", "FINISH", "REQUEUE", "ADD_EVENT", "PENDING_EVENTS", "EVENT_DONE",
            "EVENT_RETRY")}
        self._held: dict[str, tuple[str, str]] = {}  # id -> (lane, stream entry) in flight here
        self._groups: set[str] = set()
        self._cursor: dict[str, str] = {}
        self._next_reclaim: dict[str, float] = {}
        self._leases: list[Leases] = []
        self._presence: Callable[[], Mapping[str, Any]] | None = None
        self._beat: gevent.Greenlet | None = None
        self._started_at = time.time()
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisStore({self.p[:-1]!r}, consumer={self.consumer!r})"

    def _q(self, lane: str) -> str:
        return f"{self.p}q:{lane}"

    def _group(self, lane: str) -> str:
        q = self._q(lane)
        if lane not in self._groups:
            try:
                self.redis.xgroup_create(q, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(lane)
        return q

    # messages
    def add(self, items: Sequence[NewMessage], now: float) -> list[bool]:
        out: list[bool] = []
        for i in range(0, len(items), CHUNK):
            args: list[Any] = [self.p, repr(now), 0, self.maxlen]
            chunk = items[i:i + CHUNK]
            args[2] = len(chunk)
            for m in chunk:
                args += [m.id, m.lane, dumps(m.payload), m.to or "",
                         repr(m.expires_at) if m.expires_at is not None else ""]
            out += [bool(x) for x in self._s["ADD"](args=args)]
        return out

    def claim(self, lane: str, limit: int, now: float) -> tuple[list[Record], list[Record]]:
        q = self._group(lane)
        entries: list[tuple[str, str]] = []
        if time.monotonic() >= self._next_reclaim.get(lane, 0.0):
            self._next_reclaim[lane] = time.monotonic() + min(1.0, self.reclaim_idle / 4)
            cursor, taken, *_ = self.redis.xautoclaim(
                q, GROUP, self.consumer, int(self.reclaim_idle * 1000),
                self._cursor.get(lane, "0-0"), count=limit)
            self._cursor[lane] = cursor
            entries += [(e, f["id"]) for e, f in taken if f and f["id"] not in self._held]
        stolen = {id_ for _, id_ in entries}
        if len(entries) < limit:
            got = self.redis.xreadgroup(GROUP, self.consumer, {q: ">"}, count=limit - len(entries))
            for _, rows in got or []:
                entries += [(e, f["id"]) for e, f in rows if f]
        if not entries:
            return [], []
        claimed: list[Record] = []
        expired: list[Record] = []
        for i in range(0, len(entries), CHUNK):
            chunk = entries[i:i + CHUNK]
            args: list[Any] = [self.p, repr(now), GROUP, self.maxlen, len(chunk)]
            for e, id_ in chunk:
                args += [e, id_]
            for raw in self._s["CLAIM"](keys=[q], args=args):
                d = json.loads(raw)
                id_ = d["_id"]
                r = _record(id_, d)
                if d["_kind"] == "c":
                    if id_ in stolen:
                        self.reclaimed += 1
                    self._held[id_] = (lane, d["entry"])
                    claimed.append(r)
                else:
                    expired.append(r)
        self._expire([r.id for r in expired])
        return claimed, expired

    def _expire(self, ids: Sequence[str]) -> None:
        """Let finished records go after record_ttl (a terminal record never changes again)."""
        if self.record_ttl > 0 and ids:
            pipe = self.redis.pipeline(transaction=False)
            for id_ in ids:
                pipe.pexpire(f"{self.p}m:{id_}", int(self.record_ttl * 1000))
            pipe.execute()

    def finish(self, done: Sequence[Finish], now: float) -> None:
        for i in range(0, len(done), CHUNK):
            chunk = done[i:i + CHUNK]
            args: list[Any] = [self.p, repr(now), GROUP, self.maxlen, len(chunk)]
            for f in chunk:
                o = f.outcome
                args += [f.id, f.state, o.via or "", o.message_id or "", o.error or "",
                         o.description or "", o.canonical_id or ""]
                self._held.pop(f.id, None)
            self._s["FINISH"](args=args)
            self._expire([f.id for f in chunk])

    def release(self, ids: Sequence[str], now: float) -> None:
        for i in range(0, len(ids), CHUNK):
            chunk = list(ids[i:i + CHUNK])
            self._s["REQUEUE"](args=[self.p, repr(now), GROUP, len(chunk), *chunk])
            for id_ in chunk:
                self._held.pop(id_, None)

    def recover(self, now: float) -> int:
        """Re-queue what gateways without a live heartbeat held (not every in-flight message:
        other live gateways are sending theirs); returns how many."""
        n = 0
        for lane in sorted(self.redis.smembers(self.p + "lanes")):
            q = self._group(lane)
            for c in self.redis.xinfo_consumers(q, GROUP):
                name = c["name"]
                if name == self.consumer or self.redis.exists(f"{self.p}gw:{name}"):
                    continue
                while True:
                    rows = self.redis.xpending_range(q, GROUP, "-", "+", CHUNK, consumername=name)
                    if not rows:
                        break
                    entries = [r["message_id"] for r in rows]
                    taken = self.redis.xclaim(q, GROUP, self.consumer, 0, entries)
                    ids = [f["id"] for _, f in taken if f]
                    if ids:
                        n += self._s["REQUEUE"](args=[self.p, repr(now), GROUP, len(ids), *ids])
                    # A claim cut between XREADGROUP and its script left a record queued on this
                    # very entry: acking it would strand the record. It stays pending (now ours)
                    # and XAUTOCLAIM hands it out once idle. The rest are stale: ack them.
                    keep = self._still_queued(taken)
                    stale = [e for e in entries if e not in keep]
                    if stale:
                        self.redis.xack(q, GROUP, *stale)
                self.redis.xgroup_delconsumer(q, GROUP, name)
        return n

    def _still_queued(self, taken: Sequence[tuple[str, Mapping[str, str] | None]]) -> set[str]:
        """Entries whose message is still queued under that entry (never claimed)."""
        rows = [(e, f["id"]) for e, f in taken if f]
        pipe = self.redis.pipeline(transaction=False)
        for _, id_ in rows:
            pipe.hmget(f"{self.p}m:{id_}", "state", "entry")
        got = pipe.execute() if rows else []
        return {e for (e, _), (state, entry) in zip(rows, got, strict=True)
                if state == "queued" and entry == e}

    def get(self, id: str) -> Record | None:
        d = self.redis.hgetall(f"{self.p}m:{id}")
        return _record(id, d) if d else None

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((*STATES, "resent"), 0)
        out.update({k: int(v) for k, v in self.redis.hgetall(self.p + "counts").items()})
        return out

    def lanes_with_queued(self) -> list[str]:
        out = []
        for lane in sorted(self.redis.smembers(self.p + "lanes")):
            q = self._group(lane)
            if self.redis.xlen(q) > self.redis.xpending(q, GROUP)["pending"]:
                out.append(lane)
        return out

    # events
    def add_event(self, kind: str, key: str, body: Mapping[str, Any], now: float
                  ) -> tuple[int, bool]:
        seq, new = self._s["ADD_EVENT"](args=[self.p, kind, key, dumps(body), repr(now),
                                              self.maxlen])
        return int(seq), bool(new)

    def pending_events(self, kind: str, now: float, limit: int = 100) -> list[Event]:
        rows = self._s["PENDING_EVENTS"](args=[self.p, kind, repr(now), limit, EVENT_HOLD])
        out = []
        for seq, (key, body, attempts, next_at, error, created_at) in rows:
            if body is None:
                continue
            out.append(Event(int(seq), kind, key, json.loads(body), int(attempts or 0),
                             float(next_at or 0), error, float(created_at or 0)))
        return out

    def event_done(self, seqs: Sequence[int], now: float) -> None:
        if seqs:
            self._s["EVENT_DONE"](args=[self.p, *seqs])

    def event_retry(self, seq: int, next_at: float, error: str, now: float) -> None:
        self._s["EVENT_RETRY"](args=[self.p, seq, repr(next_at), error])

    def event_counts(self) -> dict[str, int]:
        out = {}
        for kind in sorted(self.redis.smembers(self.p + "ekinds")):
            n = self.redis.zcard(f"{self.p}ep:{kind}")
            if n:
                out[kind] = n
        return out

    # many gateways (beyond the Store interface)
    def start_heartbeat(self, presence: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """Announce this process as a live gateway and keep it announced (a greenlet owned by
        the store, stopped by close())."""
        self._presence = presence
        self.beat()
        if self._beat is None:
            self._beat = gevent.spawn(self._beat_loop)

    def beat(self) -> None:
        """Write presence, refresh connection leases, keep held entries from looking idle."""
        info = {"consumer": self.consumer, "pid": os.getpid(), "host": std_socket.gethostname(),
                "started_at": self._started_at, "at": time.time(), "held": len(self._held)}
        if self._presence is not None:
            try:
                info.update(self._presence())
            except Exception as exc:  # presence must never stop the heartbeat
                info["presence_error"] = f"{type(exc).__name__}: {exc}"
        self.redis.set(f"{self.p}gw:{self.consumer}", dumps(info),
                       px=int(self.heartbeat * 3000))
        for leases in self._leases:
            leases.refresh()
        by_lane: dict[str, list[str]] = {}
        for lane, entry in list(self._held.values()):
            by_lane.setdefault(lane, []).append(entry)
        for lane, entries in by_lane.items():
            for i in range(0, len(entries), CHUNK):
                self.redis.xclaim(self._q(lane), GROUP, self.consumer, 0, entries[i:i + CHUNK],
                                  justid=True)

    def _beat_loop(self) -> None:
        while not self._closed:
            gevent.sleep(self.heartbeat)
            try:
                self.beat()
            except redis.RedisError:
                log.exception("outbox heartbeat failed; trying again in %ss", self.heartbeat)

    def connection_lease(self, sender_id: str, budget: int) -> Callable[[], Any]:
        """The pool's lease hook for CCS sessions of `sender_id`, `budget` across processes."""
        leases = Leases(self.redis, f"{self.p}leases:{sender_id}", budget, self.heartbeat * 3)
        self._leases.append(leases)
        return leases.take

    def gateways(self) -> list[dict[str, Any]]:
        """Every live gateway's last heartbeat."""
        keys = sorted(self.redis.scan_iter(match=f"{self.p}gw:*", count=1000))
        return [json.loads(v) for v in self.redis.mget(keys) if v] if keys else []

    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        """Append to the public stream P:s:<kind> (token events; outcomes go from scripts)."""
        self.redis.xadd(f"{self.p}s:{kind}", {"body": dumps(data)}, maxlen=self.maxlen,
                        approximate=True)

    def tail(self, kinds: Sequence[str], block_ms: int = 1000, start: str = "$"
             ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Follow the public streams from now (or `start`): (kind, data) as gateways append."""
        pos = {f"{self.p}s:{k}": start for k in kinds}
        if start == "$":  # resolved at the call, so nothing between two reads is missed
            for key in pos:
                info = self.redis.xinfo_stream(key) if self.redis.exists(key) else None
                pos[key] = info["last-generated-id"] if info else "0-0"
        return self._follow(pos, block_ms)

    def _follow(self, pos: dict[str, str], block_ms: int
                ) -> Iterator[tuple[str, dict[str, Any]]]:
        while not self._closed:
            for key, rows in self.redis.xread(pos, block=block_ms) or []:
                for entry, f in rows:
                    pos[key] = entry
                    data = json.loads(f.pop("body")) if "body" in f else {}
                    yield key[len(self.p) + 2:], {**f, **data}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._beat is not None:
            self._beat.kill()
        try:
            for leases in self._leases:
                leases.close()
            if self._presence is not None or self._beat is not None:
                self.redis.delete(f"{self.p}gw:{self.consumer}")
        except redis.RedisError:
            log.warning("could not give back leases and presence (they expire)")
        self.redis.close()
