"""The Redis outbox: many gateway processes share one queue (Redis Streams, consumer groups),
on one Redis server or a Redis Cluster.

Sharded: the outbox is split into `shards` parts whose keys share one hash tag each
("{prefix:N}:"), so every Lua script (ccs.gateway.outbox.redis_lua) touches one cluster slot and the
shards spread over the cluster's masters. A message's shard is crc32(id) mod shards, so an id
names its shard (`ccs status ID` reads one hash). In each shard each lane is a stream read by
the consumer group "gw"; each gateway process is a consumer of every shard. The message record
(state, attempts, outcome) is a hash beside it; every state change is one script, so records,
counts and stream entries move together. Outcomes, upstream messages, receipts and token
events are appended to the shard's public streams {P:N}:s:<kind> that apps, `ccs tail` and
result() read. Keys outside the shards ({P}:gw:*, {P}:gws, {P}:shards, leases) share the tag
"{P}". The shard count is fixed when the outbox is first used (kept in {P}:shards).

Many processes, so two Store semantics change (documented in docs/gateway.rst):
- recover() at open re-queues only what consumers WITHOUT a live heartbeat held; a live
  gateway's in-flight messages are its own.
- a gateway that dies without a clean stop leaves its entries pending; any other gateway's
  claim() takes them over with XAUTOCLAIM once idle for `reclaim_idle` seconds (resent + 1).
  A live gateway keeps its held entries' idle time low from its heartbeat (XCLAIM to itself),
  so a message retried for long is not taken from a healthy process.

Redis going away (restart, failover, network): calls raise StoreUnavailable (nothing written);
callers back off and try again; healthy() says whether the last call got through.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket as std_socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gevent
import redis

from ccs.errors import ConfigError
from ccs.gateway.lease import Leases
from ccs.gateway.outbox import redis_lua as lua
from ccs.gateway.outbox import shown
from ccs.gateway.outbox.base import (
    STATES,
    Event,
    Finish,
    NewMessage,
    Record,
    Store,
    StoreUnavailable,
    dumps,
    load_payload,
)
from ccs.gateway.outbox.redis_conn import connect
from ccs.gateway.outbox.redis_read import DOWN, Readers, guarded, shard_of
from ccs.gateway.outbox.redis_url import RedisTarget, parse
from ccs.outcome import SendResult

log = logging.getLogger(__name__)

GROUP = "gw"
CHUNK = 500  # messages per script call: keeps each atomic step short for other clients
EVENT_HOLD = 60.0  # seconds a handed-out event is hidden from other gateways


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


class RedisStore(Readers, Store):
    def __init__(self, url: str, *, reclaim_idle: float = 30.0, heartbeat: float = 5.0,
                 stream_maxlen: int = 1_000_000, record_ttl: float = 0.0,
                 name: str | None = None, shards: int = 16, password: str | None = None,
                 ca_file: str | None = None, dedup_horizon: float = 2_505_600.0) -> None:
        if reclaim_idle < 2 * heartbeat:
            raise ConfigError("outbox.reclaim_idle", f"must be at least twice outbox.heartbeat "
                              f"({heartbeat}s), got {reclaim_idle}")
        self.source = url  # as configured, prefix included
        self.target: RedisTarget = parse(url, password, ca_file)
        prefix = self.target.prefix
        self.g = f"{{{prefix}}}:"  # keys outside the shards (gateways, leases, shard count)
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.retry_after = 1.0
        try:
            self.redis = connect(self.target)
            self.redis.set(self.g + "shards", shards, nx=True)
            self.shards = int(self.redis.get(self.g + "shards"))
        except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
            if hasattr(self, "redis"):
                self.redis.close()
            raise ConfigError("outbox.path", f"cannot reach Redis at {shown(url)}: "
                              f"{type(exc).__name__}: {exc}") from None
        if self.shards != shards:
            log.warning("outbox %s keeps its %d shards (outbox.shards %d applies to a new "
                        "outbox only)", shown(url), self.shards, shards)
        self.ps = [f"{{{prefix}:{k}}}:" for k in range(self.shards)]
        self.reclaim_idle = reclaim_idle
        self.heartbeat = heartbeat
        # the public streams' length is for the outbox: each shard keeps its part of it
        self.maxlen = max(1, -(-stream_maxlen // self.shards))
        self.record_ttl = record_ttl  # seconds a finished record is kept (0: for ever)
        self.dedup_horizon = dedup_horizon
        self.consumer = name or f"{std_socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.reclaimed = 0  # messages this process took over from a silent gateway
        self._s = {n: self.redis.register_script(getattr(lua, n)) for n in (
            "ADD", "CLAIM", "FINISH", "REQUEUE", "ADD_EVENT", "PENDING_EVENTS", "EVENT_DONE",
            "EVENT_RETRY")}
        self._held: dict[str, tuple[str, str]] = {}  # id -> (lane, stream entry) in flight here
        self._groups: set[tuple[str, int]] = set()
        self._cursor: dict[tuple[str, int], str] = {}
        self._next_reclaim: dict[tuple[str, int], float] = {}
        self._turn: dict[str, int] = {}  # lane -> shard its next claim starts at
        self._leases: list[Leases] = []
        self._presence: Callable[[], Mapping[str, Any]] | None = None
        self._beat: gevent.Greenlet | None = None
        self._waiters: dict[str, list[SendResult]] = {}
        self._followers: dict[int, gevent.Greenlet] = {}
        self._started_at = time.time()
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisStore({self.g[:-1]!r}, shards={self.shards}, consumer={self.consumer!r})"

    def _down(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("Redis outbox %s unavailable: %s", shown(self.source), exc)
        self.last_error = f"{type(exc).__name__}: {exc}"

    def healthy(self) -> bool:
        """False while Redis does not answer (set by the last call, heartbeats included)."""
        return self.down_since is None

    def shard(self, id: str) -> str:
        """The key prefix of the shard message (or event key) `id` belongs to."""
        return self.ps[shard_of(id, self.shards)]

    def stream_keys(self, kind: str) -> list[str]:
        """The public stream of `kind` in every shard."""
        return [f"{p}s:{kind}" for p in self.ps]

    def _q(self, lane: str, k: int) -> str:
        return f"{self.ps[k]}q:{lane}"

    def _group(self, lane: str, k: int) -> str:
        q = self._q(lane, k)
        if (lane, k) not in self._groups:
            try:
                self.redis.xgroup_create(q, GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add((lane, k))
        return q

    def _by_shard(self, ids: Sequence[str]) -> dict[int, list[int]]:
        """Positions in `ids` grouped by shard."""
        out: dict[int, list[int]] = {}
        for i, id_ in enumerate(ids):
            out.setdefault(shard_of(id_, self.shards), []).append(i)
        return out

    # messages
    @guarded
    def add(self, items: Sequence[NewMessage], now: float) -> list[bool]:
        calls: list[tuple[list[str], list[Any]]] = []
        places: list[list[int]] = []
        for k, where in self._by_shard([m.id for m in items]).items():
            p = self.ps[k]
            for i in range(0, len(where), CHUNK):
                chunk = where[i:i + CHUNK]
                args: list[Any] = [p, repr(now), len(chunk), self.maxlen]
                for j in chunk:
                    m = items[j]
                    args += [m.id, m.lane, dumps(m.payload), m.to or "",
                             repr(m.expires_at) if m.expires_at is not None else ""]
                calls.append(([p + "counts"], args))
                places.append(chunk)
        out = [False] * len(items)
        for chunk, got in zip(places, self._many("ADD", calls), strict=True):
            for j, x in zip(chunk, got, strict=True):
                out[j] = bool(x)
        return out

    def _many(self, name: str, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run script `name` once per (keys, args), every shard's call in one pipeline (a
        cluster client sends each node its part): one round trip instead of one per shard.
        A node without the script (restarted, a promoted replica) gets it and the pipeline
        runs again; the scripts used here give the same result when run twice."""
        if len(calls) <= 1:
            return [self._s[name](keys=k, args=a) for k, a in calls]
        script = self._s[name]
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                return list(pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self.redis.script_load(script.script)
        raise AssertionError("unreachable")

    @guarded
    def claim(self, lane: str, limit: int, now: float) -> tuple[list[Record], list[Record]]:
        """Up to `limit` from the shards in turn (each call starts one shard further on)."""
        first = self._turn.get(lane, 0)
        self._turn[lane] = (first + 1) % self.shards
        claimed: list[Record] = []
        expired: list[Record] = []
        for n in range(self.shards):
            if len(claimed) + len(expired) >= limit:
                break
            try:
                c, x = self._claim(lane, (first + n) % self.shards,
                                   limit - len(claimed) - len(expired), now)
            except DOWN as exc:
                if not claimed and not expired:
                    raise
                # What earlier shards handed over is in flight here now: it must reach the
                # caller (held but never sent, it would be kept from takeover for ever).
                self._down(exc)
                break
            claimed += c
            expired += x
        self._expire([r.id for r in expired])
        return claimed, expired

    def _claim(self, lane: str, k: int, limit: int, now: float
               ) -> tuple[list[Record], list[Record]]:
        try:
            return self._claim_from(lane, k, limit, now)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The group is gone (a failover lost its creation, or someone deleted the
            # stream): make it again; its entries are read from the start.
            self._groups.discard((lane, k))
            self._group(lane, k)
            return [], []

    def _claim_from(self, lane: str, k: int, limit: int, now: float
                    ) -> tuple[list[Record], list[Record]]:
        q = self._group(lane, k)
        entries: list[tuple[str, str]] = []
        if time.monotonic() >= self._next_reclaim.get((lane, k), 0.0):
            self._next_reclaim[(lane, k)] = time.monotonic() + min(1.0, self.reclaim_idle / 4)
            cursor, taken, *_ = self.redis.xautoclaim(
                q, GROUP, self.consumer, int(self.reclaim_idle * 1000),
                self._cursor.get((lane, k), "0-0"), count=limit)
            self._cursor[(lane, k)] = cursor
            entries += [(e, f["id"]) for e, f in taken if f and f["id"] not in self._held]
        stolen = {id_ for _, id_ in entries}
        if len(entries) < limit:
            got = self.redis.xreadgroup(GROUP, self.consumer, {q: ">"}, count=limit - len(entries))
            for _, rows in got or []:
                entries += [(e, f["id"]) for e, f in rows if f]
        claimed: list[Record] = []
        expired: list[Record] = []
        for i in range(0, len(entries), CHUNK):
            chunk = entries[i:i + CHUNK]
            args: list[Any] = [self.ps[k], repr(now), GROUP, self.maxlen, len(chunk)]
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
        return claimed, expired

    def _expire(self, ids: Sequence[str]) -> None:
        """Let finished records go after record_ttl (a terminal record never changes again)."""
        if self.record_ttl > 0 and ids:
            pipe = self.redis.pipeline(transaction=False)
            for id_ in ids:
                pipe.pexpire(f"{self.shard(id_)}m:{id_}", int(self.record_ttl * 1000))
            pipe.execute()

    @guarded
    def finish(self, done: Sequence[Finish], now: float) -> None:
        calls: list[tuple[list[str], list[Any]]] = []
        for k, where in self._by_shard([f.id for f in done]).items():
            p = self.ps[k]
            for i in range(0, len(where), CHUNK):
                chunk = [done[j] for j in where[i:i + CHUNK]]
                args: list[Any] = [p, repr(now), GROUP, self.maxlen, len(chunk)]
                for f in chunk:
                    o = f.outcome
                    args += [f.id, f.state, o.via or "", o.message_id or "", o.error or "",
                             o.description or "", o.canonical_id or ""]
                calls.append(([p + "counts"], args))
        self._many("FINISH", calls)
        for f in done:
            self._held.pop(f.id, None)
        self._expire([f.id for f in done])

    def _requeue(self, k: int, ids: Sequence[str], now: float) -> int:
        p, n = self.ps[k], 0
        for i in range(0, len(ids), CHUNK):
            chunk = list(ids[i:i + CHUNK])
            n += self._s["REQUEUE"](keys=[p + "counts"],
                                    args=[p, repr(now), GROUP, len(chunk), *chunk])
        return n

    @guarded
    def release(self, ids: Sequence[str], now: float) -> None:
        for k, where in self._by_shard(ids).items():
            self._requeue(k, [ids[j] for j in where], now)
            for j in where:
                self._held.pop(ids[j], None)

    @guarded
    def recover(self, now: float) -> int:
        """Re-queue what gateways without a live heartbeat held (not every in-flight message:
        other live gateways are sending theirs); returns how many."""
        n = 0
        for k, p in enumerate(self.ps):
            for lane in sorted(self.redis.smembers(p + "lanes")):
                q = self._group(lane, k)
                for c in self.redis.xinfo_consumers(q, GROUP):
                    name = c["name"]
                    if name == self.consumer or self.redis.exists(f"{self.g}gw:{name}"):
                        continue
                    while True:
                        rows = self.redis.xpending_range(q, GROUP, "-", "+", CHUNK,
                                                         consumername=name)
                        if not rows:
                            break
                        entries = [r["message_id"] for r in rows]
                        taken = self.redis.xclaim(q, GROUP, self.consumer, 0, entries)
                        ids = [f["id"] for _, f in taken if f]
                        if ids:
                            n += self._requeue(k, ids, now)
                        # A claim cut between XREADGROUP and its script left a record queued
                        # on this very entry: acking it would strand the record. It stays
                        # pending (now ours) and XAUTOCLAIM hands it out once idle. The rest
                        # are stale (finished): ack them.
                        keep = self._still_queued(p, taken)
                        stale = [e for e in entries if e not in keep]
                        if stale:
                            self.redis.xack(q, GROUP, *stale)
                    self.redis.xgroup_delconsumer(q, GROUP, name)
        return n

    def _still_queued(self, p: str, taken: Sequence[tuple[str, Mapping[str, str] | None]]
                      ) -> set[str]:
        """Entries whose message (in shard prefix p) is still queued under that entry."""
        rows = [(e, f["id"]) for e, f in taken if f]
        pipe = self.redis.pipeline(transaction=False)
        for _, id_ in rows:
            pipe.hmget(f"{p}m:{id_}", "state", "entry")
        got = pipe.execute() if rows else []
        return {e for (e, _), (state, entry) in zip(rows, got, strict=True)
                if state == "queued" and entry == e}

    @guarded
    def get(self, id: str) -> Record | None:
        d = self.redis.hgetall(f"{self.shard(id)}m:{id}")
        return _record(id, d) if d else None

    @guarded
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((*STATES, "resent"), 0)
        for p in self.ps:
            for k, v in self.redis.hgetall(p + "counts").items():
                out[k] = out.get(k, 0) + int(v)
        return out

    @guarded
    def lanes_with_queued(self) -> list[str]:
        out = set()
        for k, p in enumerate(self.ps):
            for lane in self.redis.smembers(p + "lanes"):
                q = self._group(lane, k)
                if self.redis.xlen(q) > self.redis.xpending(q, GROUP)["pending"]:
                    out.add(lane)
        return sorted(out)

    # events: seq = shard-local seq * shards + shard, so a seq names its shard
    def _split(self, seq: int) -> tuple[int, int]:
        return seq % self.shards, seq // self.shards

    @guarded
    def add_event(self, kind: str, key: str, body: Mapping[str, Any], now: float
                  ) -> tuple[int, bool]:
        k = shard_of(key, self.shards)
        p = self.ps[k]
        seq, new = self._s["ADD_EVENT"](keys=[p + "eseq"], args=[
            p, kind, key, dumps(body), repr(now), self.maxlen, max(1, int(self.dedup_horizon)),
            self.shards, k])
        return int(seq) * self.shards + k, bool(new)

    @guarded
    def pending_events(self, kind: str, now: float, limit: int = 100) -> list[Event]:
        out: list[Event] = []
        for k, p in enumerate(self.ps):
            if len(out) >= limit:
                break
            rows = self._s["PENDING_EVENTS"](keys=[f"{p}ep:{kind}"], args=[
                p, kind, repr(now), limit - len(out), EVENT_HOLD])
            for seq, (key, body, attempts, next_at, error, created_at) in rows:
                if body is None:
                    continue
                out.append(Event(int(seq) * self.shards + k, kind, key, json.loads(body),
                                 int(attempts or 0), float(next_at or 0), error,
                                 float(created_at or 0)))
        return out

    @guarded
    def event_done(self, seqs: Sequence[int], now: float) -> None:
        by: dict[int, list[int]] = {}
        for seq in seqs:
            k, local = self._split(seq)
            by.setdefault(k, []).append(local)
        for k, local in by.items():
            self._s["EVENT_DONE"](keys=[self.ps[k] + "eseq"], args=[self.ps[k], *local])

    @guarded
    def event_retry(self, seq: int, next_at: float, error: str, now: float) -> None:
        k, local = self._split(seq)
        self._s["EVENT_RETRY"](keys=[self.ps[k] + "eseq"],
                               args=[self.ps[k], local, repr(next_at), error])

    @guarded
    def event_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.ps:
            for kind in self.redis.smembers(p + "ekinds"):
                n = self.redis.zcard(f"{p}ep:{kind}")
                if n:
                    out[kind] = out.get(kind, 0) + n
        return dict(sorted(out.items()))

    # many gateways (beyond the Store interface)
    def start_heartbeat(self, presence: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """Announce this process as a live gateway and keep it announced (a greenlet owned by
        the store, stopped by close())."""
        self._presence = presence
        try:
            self.beat()
        except StoreUnavailable:
            pass  # the loop tries again
        if self._beat is None:
            self._beat = gevent.spawn(self._beat_loop)

    @guarded
    def beat(self) -> None:
        """Write presence, refresh connection leases, keep held entries from looking idle."""
        info = {"consumer": self.consumer, "pid": os.getpid(), "host": std_socket.gethostname(),
                "started_at": self._started_at, "at": time.time(), "held": len(self._held)}
        if self._presence is not None:
            try:
                info.update(self._presence())
            except Exception as exc:  # presence must never stop the heartbeat
                info["presence_error"] = f"{type(exc).__name__}: {exc}"
        self.redis.set(f"{self.g}gw:{self.consumer}", dumps(info),
                       px=int(self.heartbeat * 3000))
        self.redis.sadd(self.g + "gws", self.consumer)
        for leases in self._leases:
            leases.refresh()
        by_lane: dict[tuple[str, int], list[str]] = {}
        for id_, (lane, entry) in list(self._held.items()):
            by_lane.setdefault((lane, shard_of(id_, self.shards)), []).append(entry)
        for (lane, k), entries in by_lane.items():
            for i in range(0, len(entries), CHUNK):
                self.redis.xclaim(self._q(lane, k), GROUP, self.consumer, 0,
                                  entries[i:i + CHUNK], justid=True)

    def _beat_loop(self) -> None:
        while not self._closed:
            gevent.sleep(self.heartbeat)
            try:
                self.beat()
            except StoreUnavailable as exc:
                log.warning("outbox heartbeat failed (%s); trying again in %ss", exc,
                            self.heartbeat)
            except redis.RedisError:
                log.exception("outbox heartbeat failed; trying again in %ss", self.heartbeat)

    def connection_lease(self, sender_id: str, budget: int) -> Callable[[], Any]:
        """The pool's lease hook for CCS sessions of `sender_id`, `budget` across processes."""
        leases = Leases(self.redis, f"{self.g}leases:{sender_id}", budget, self.heartbeat * 3)
        self._leases.append(leases)
        return leases.take

    @guarded
    def gateways(self) -> list[dict[str, Any]]:
        """Every live gateway's last heartbeat."""
        names = sorted(self.redis.smembers(self.g + "gws"))
        if not names:
            return []
        values = self.redis.mget([f"{self.g}gw:{n}" for n in names])
        gone = [n for n, v in zip(names, values, strict=True) if not v]
        if gone:
            self.redis.srem(self.g + "gws", *gone)
        return [json.loads(v) for v in values if v]

    @guarded
    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        """Append to a public stream (token events; outcomes go from scripts)."""
        p = self.shard(str(data.get("token") or ""))
        self.redis.xadd(f"{p}s:{kind}", {"body": dumps(data)}, maxlen=self.maxlen,
                        approximate=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._beat is not None:
            self._beat.kill()
        gevent.killall(list(self._followers.values()))
        try:
            for leases in self._leases:
                leases.close()
            if self._presence is not None or self._beat is not None:
                self.redis.delete(f"{self.g}gw:{self.consumer}")
                self.redis.srem(self.g + "gws", self.consumer)
        except redis.RedisError:
            log.warning("could not give back leases and presence (they expire)")
        self.redis.close()
