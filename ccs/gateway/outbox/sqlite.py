"""The SQLite outbox: one file in WAL mode, every change through one group-committing writer.

Callers in any greenlet hand an operation to the writer greenlet and wait; the writer runs all
operations waiting at that moment in one transaction, then wakes their callers. One commit
thus serves many enqueues and outcome updates, so the outbox does not cap throughput.
With `threadpool=True` the transaction runs in gevent's threadpool instead of the hub.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gevent
from gevent.event import Event as GEvent

from ccs.errors import ConfigError
from ccs.gateway.outbox.base import (
    IN_FLIGHT,
    QUEUED,
    STATES,
    Event,
    Finish,
    NewMessage,
    Record,
    Store,
    dumps,
    load_payload,
)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, lane TEXT NOT NULL,
    state TEXT NOT NULL, payload TEXT NOT NULL, target TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, resent INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, expires_at REAL,
    via TEXT, provider_message_id TEXT, error TEXT, description TEXT, canonical_id TEXT);
CREATE INDEX IF NOT EXISTS messages_queued ON messages(lane, seq) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS messages_ttl ON messages(lane, expires_at)
    WHERE state = 'queued' AND expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (state TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, error TEXT, created_at REAL NOT NULL, UNIQUE (kind, key));
CREATE INDEX IF NOT EXISTS events_pending ON events(kind, next_at) WHERE done = 0;
"""

PAYLOAD_CACHE = 200_000  # payloads kept in memory between enqueue and claim, at most

_COLS = ("seq, id, lane, state, payload, target, attempts, resent, created_at, updated_at, "
         "expires_at, via, provider_message_id, error, description, canonical_id")


def _record(row: Sequence[Any], payload: Any = None) -> Record:
    if payload is None:
        payload = load_payload(row[4])
    return Record(seq=row[0], id=row[1], lane=row[2], state=row[3], payload=payload,
                  to=row[5], attempts=row[6], resent=row[7], created_at=row[8], updated_at=row[9],
                  expires_at=row[10], via=row[11], provider_message_id=row[12], error=row[13],
                  description=row[14], canonical_id=row[15])


class _Moves(dict[str, int]):
    """Per-state count changes of one transaction, written once before it commits."""

    def add(self, changes: dict[str, int]) -> None:
        for k, v in changes.items():
            self[k] = self.get(k, 0) + v

    def write(self, db: sqlite3.Connection) -> None:
        db.executemany("INSERT INTO counters(state, n) VALUES (?, ?) "
                       "ON CONFLICT(state) DO UPDATE SET n = n + excluded.n",
                       [(k, v) for k, v in self.items() if v])
        self.clear()


class _Connection(sqlite3.Connection):
    """A connection that carries its open transaction's count changes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.moves = _Moves()


def _bump(db: sqlite3.Connection, moves: dict[str, int]) -> None:
    """Keep per-state counts in step (so stats never scan the table)."""
    db.moves.add(moves)  # type: ignore[attr-defined]


_EXPECTED = {"messages": {"seq", "id", "lane", "state", "payload", "target", "attempts",
                          "resent", "created_at", "updated_at", "expires_at", "via",
                          "provider_message_id", "error", "description", "canonical_id"},
             "counters": {"state", "n"},
             "events": {"seq", "kind", "key", "body", "done", "attempts", "next_at", "error",
                        "created_at"}}


def _open(path: str, sync: str) -> _Connection:
    """Open (or create) the outbox file; anything wrong with it is a ConfigError naming
    outbox.path: a directory, a missing parent, a file that is not an outbox or is damaged,
    one that cannot be written."""
    if os.path.isdir(path):
        raise ConfigError("outbox.path", f"{path} is a directory, not an outbox file")
    db: Any = None
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                             factory=_Connection)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        db.execute("PRAGMA busy_timeout=5000")  # another process (`ccs enqueue`) writing
        db.executescript(SCHEMA)
        for table, columns in _EXPECTED.items():
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if not columns <= have:
                raise ConfigError("outbox.path", f"{path} is an SQLite file of something else "
                                  f"(table {table} lacks {', '.join(sorted(columns - have))})")
        # touch the ends of the tables: a truncated file fails here, not at the first claim
        db.execute("SELECT max(seq) FROM messages").fetchone()
        db.execute("SELECT max(seq) FROM events").fetchone()
        db.execute("SELECT count(*) FROM counters").fetchone()
    except (sqlite3.Error, OSError) as exc:
        if db is not None:
            db.close()
        parent = os.path.dirname(os.path.abspath(path))
        hint = f" (no directory {parent})" if not os.path.isdir(parent) else ""
        raise ConfigError("outbox.path", f"cannot use {path} as the outbox: {exc}{hint}") \
            from None
    except ConfigError:
        db.close()
        raise
    return db  # type: ignore[no-any-return]


class _Group:
    """Operations committed together, and their results in order."""

    __slots__ = ("ops", "results", "done")

    def __init__(self) -> None:
        self.ops: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.results: list[tuple[bool, Any]] = []
        self.done = GEvent()


class SqliteStore(Store):
    def __init__(self, path: str, sync: str = "normal", threadpool: bool = False,
                 batch: int = 2000) -> None:
        self.path = path
        self.threadpool = threadpool
        self.batch = batch
        self.commits = 0  # transactions committed; ops / commits = the group size
        self.ops = 0
        self._db = _open(path, sync)
        self._pending: deque[_Group] = deque()
        self._open: _Group | None = None  # the group new operations join
        self._wake = GEvent()
        self._closed = False
        self._busy = False
        self._payloads: dict[str, Any] = {}  # payloads stored by this process, not yet claimed
        self._writer = gevent.spawn(self._write_loop)

    # the writer
    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise RuntimeError("outbox is closed")
        group = self._open
        if group is None or len(group.ops) >= self.batch:
            group = self._open = _Group()
            self._pending.append(group)
        index = len(group.ops)
        group.ops.append((fn, args))
        self._wake.set()
        group.done.wait()  # one event wakes the whole group: cheaper than a result each
        ok, value = group.results[index]
        if not ok:
            raise value
        return value

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._pending:
                group = self._pending.popleft()
                if group is self._open:
                    self._open = None  # callers from now on start the next group
                self._busy = True
                if self.threadpool:
                    group.results = gevent.get_hub().threadpool.apply(self._transaction,
                                                                      (group.ops,))
                else:
                    group.results = self._transaction(group.ops)
                self._busy = False
                group.done.set()
                gevent.sleep(0)  # let the woken callers queue their next operations

    def _transaction(self, ops: list[tuple[Callable[..., Any], tuple[Any, ...]]]
                     ) -> list[tuple[bool, Any]]:
        db: Any = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            added = self._add_all(db, [args for fn, args in ops if fn is self._add])
            outs = [(True, [True] * len(args[0]) if added and fn is self._add else fn(db, *args))
                    for fn, args in ops]
            db.moves.write(db)
            db.execute("COMMIT")
            self.commits += 1
            self.ops += len(ops)
            return outs
        except Exception:
            db.moves.clear()
            if db.in_transaction:
                db.execute("ROLLBACK")
        outs = []  # one operation failed: run each alone so only it sees its error
        for fn, args in ops:
            try:
                db.execute("BEGIN IMMEDIATE")
                value = fn(db, *args)
                db.moves.write(db)
                db.execute("COMMIT")
                outs.append((True, value))
            except Exception as exc:
                db.moves.clear()
                if db.in_transaction:
                    db.execute("ROLLBACK")
                outs.append((False, exc))
        return outs

    def _add_all(self, db: sqlite3.Connection, adds: list[tuple[Any, ...]]) -> bool:
        """Insert every add of this transaction in one statement; False when any id is
        already stored (then each add runs alone, ignoring the ids already there)."""
        rows = [(m.id, m.lane, dumps(m.payload), m.to, now, now, m.expires_at)
                for items, now in adds for m in items]
        if not rows:
            return False
        db.execute("SAVEPOINT adds")
        try:
            db.executemany("INSERT INTO messages(id, lane, state, payload, target, created_at, "
                           "updated_at, expires_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)", rows)
        except sqlite3.IntegrityError:
            db.execute("ROLLBACK TO adds")
            db.execute("RELEASE adds")
            return False
        db.execute("RELEASE adds")
        _bump(db, {QUEUED: len(rows)})
        if len(self._payloads) < PAYLOAD_CACHE:  # claim then skips decoding them again
            for items, _ in adds:
                for m in items:
                    self._payloads[m.id] = m.payload
        return True

    # operations (run inside the writer's transaction)
    @staticmethod
    def _add(db: sqlite3.Connection, items: Sequence[NewMessage], now: float) -> list[bool]:
        out = []
        for m in items:
            cur = db.execute(
                "INSERT OR IGNORE INTO messages(id, lane, state, payload, target, created_at, "
                "updated_at, expires_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                (m.id, m.lane, dumps(m.payload), m.to, now, now, m.expires_at))
            out.append(cur.rowcount == 1)
        _bump(db, {QUEUED: sum(out)})
        return out

    def _claim(self, db: sqlite3.Connection, lane: str, limit: int, now: float
               ) -> tuple[list[Record], list[Record]]:
        cache = self._payloads
        reason = "time_to_live passed before it was sent"
        expired = [_record(r, cache.pop(r[1], None)) for r in db.execute(
            f"UPDATE messages SET state = 'expired', error = ?, updated_at = ? WHERE lane = ? "
            f"AND state = 'queued' AND expires_at <= ? RETURNING {_COLS}",
            (reason, now, lane, now)).fetchall()]
        claimed = [_record(r, cache.pop(r[1], None)) for r in db.execute(
            f"UPDATE messages SET state = 'in_flight', attempts = attempts + 1, updated_at = ? "
            f"WHERE seq IN (SELECT seq FROM messages WHERE lane = ? AND state = 'queued' "
            f"ORDER BY seq LIMIT ?) RETURNING {_COLS}", (now, lane, limit)).fetchall()]
        claimed.sort(key=lambda r: r.seq)
        expired.sort(key=lambda r: r.seq)
        _bump(db, {QUEUED: -len(claimed) - len(expired), IN_FLIGHT: len(claimed),
                   "expired": len(expired)})
        return claimed, expired

    @staticmethod
    def _finish(db: sqlite3.Connection, done: Sequence[Finish], now: float) -> None:
        moves: dict[str, int] = {}
        by_state: dict[str, list[tuple[Any, ...]]] = {}
        for f in done:
            o = f.outcome
            by_state.setdefault(f.state, []).append(
                (o.via, now, o.message_id, o.error, o.description, o.canonical_id,
                 f.seq or None, f.id))
        for state, rows in by_state.items():
            for before in (IN_FLIGHT, QUEUED):  # queued: released at stop, answered late
                cur = db.executemany(
                    "UPDATE messages SET state = ?, via = ?, updated_at = ?, "
                    "provider_message_id = ?, error = ?, description = ?, canonical_id = ? "
                    "WHERE seq = coalesce(?, (SELECT seq FROM messages WHERE id = ?)) "
                    "AND state = ?", [(state, *r, before) for r in rows])
                moves[state] = moves.get(state, 0) + cur.rowcount
                moves[before] = moves.get(before, 0) - cur.rowcount
                if moves[state] == len(rows):
                    break
        _bump(db, moves)

    @staticmethod
    def _release(db: sqlite3.Connection, ids: Sequence[str], now: float) -> None:
        n = 0
        for id_ in ids:
            n += db.execute("UPDATE messages SET state = 'queued', resent = resent + 1, "
                            "updated_at = ? WHERE id = ? AND state = 'in_flight'",
                            (now, id_)).rowcount
        _bump(db, {QUEUED: n, IN_FLIGHT: -n, "resent": n})

    @staticmethod
    def _recover(db: sqlite3.Connection, now: float) -> int:
        n = db.execute("UPDATE messages SET state = 'queued', resent = resent + 1, "
                       "updated_at = ? WHERE state = 'in_flight'", (now,)).rowcount
        _bump(db, {QUEUED: n, IN_FLIGHT: -n, "resent": n})
        return n

    # the Store interface
    def add(self, items: Sequence[NewMessage], now: float) -> list[bool]:
        return self._call(self._add, items, now)

    def claim(self, lane: str, limit: int, now: float) -> tuple[list[Record], list[Record]]:
        return self._call(self._claim, lane, limit, now)

    def finish(self, done: Sequence[Finish], now: float) -> None:
        self._call(self._finish, done, now)

    def release(self, ids: Sequence[str], now: float) -> None:
        self._call(self._release, ids, now)

    def recover(self, now: float) -> int:
        return self._call(self._recover, now)

    def get(self, id: str) -> Record | None:
        def op(db: sqlite3.Connection) -> Record | None:
            row = db.execute(f"SELECT {_COLS} FROM messages WHERE id = ?", (id,)).fetchone()
            return _record(row) if row else None
        return self._call(op)

    def counts(self) -> dict[str, int]:
        def op(db: sqlite3.Connection) -> dict[str, int]:
            out = dict.fromkeys((*STATES, "resent"), 0)
            out.update(dict(db.execute("SELECT state, n FROM counters").fetchall()))
            return out
        return self._call(op)

    def lanes_with_queued(self) -> list[str]:
        def op(db: sqlite3.Connection) -> list[str]:
            rows = db.execute("SELECT DISTINCT lane FROM messages WHERE state = 'queued'")
            return [r[0] for r in rows]
        return self._call(op)

    def add_event(self, kind: str, key: str, body: Mapping[str, Any], now: float
                  ) -> tuple[int, bool]:
        def op(db: sqlite3.Connection) -> tuple[int, bool]:
            cur = db.execute("INSERT OR IGNORE INTO events(kind, key, body, next_at, created_at)"
                             " VALUES (?, ?, ?, ?, ?)", (kind, key, dumps(body), now, now))
            if cur.rowcount == 1:
                return int(cur.lastrowid or 0), True
            row = db.execute("SELECT seq FROM events WHERE kind = ? AND key = ?", (kind, key))
            return int(row.fetchone()[0]), False
        return self._call(op)

    def pending_events(self, kind: str, now: float, limit: int = 100) -> list[Event]:
        def op(db: sqlite3.Connection) -> list[Event]:
            rows = db.execute(
                "SELECT seq, kind, key, body, attempts, next_at, error, created_at FROM events "
                "WHERE kind = ? AND done = 0 AND next_at <= ? ORDER BY seq LIMIT ?",
                (kind, now, limit)).fetchall()
            return [Event(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7])
                    for r in rows]
        return self._call(op)

    def event_done(self, seqs: Sequence[int], now: float) -> None:
        self._call(lambda db: db.executemany("UPDATE events SET done = 1 WHERE seq = ?",
                                             [(s,) for s in seqs]))

    def event_retry(self, seq: int, next_at: float, error: str, now: float) -> None:
        self._call(lambda db: db.execute(
            "UPDATE events SET attempts = attempts + 1, next_at = ?, error = ? WHERE seq = ?",
            (next_at, error, seq)))

    def event_counts(self) -> dict[str, int]:
        def op(db: sqlite3.Connection) -> dict[str, int]:
            rows = db.execute("SELECT kind, count(*) FROM events WHERE done = 0 GROUP BY kind")
            return dict(rows.fetchall())
        return self._call(op)

    def close(self) -> None:
        """Finish queued operations, then close the file."""
        if self._closed:
            return
        if self._pending or self._busy:
            self._call(lambda db: None)  # runs after everything already handed over
        self._closed = True
        self._writer.kill()
        self._db.close()


class OutboxLock:
    """One gateway per outbox file: at start it re-queues what was in flight, which would be
    wrong while another gateway is still sending them. Other readers and `ccs enqueue` need
    no lock."""

    def __init__(self, path: str) -> None:
        self.path = path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise BlockingIOError (another gateway holds it); ConfigError
        naming outbox.path when the lock file cannot be made."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError("outbox.path", f"cannot create the lock file {self.path}: "
                                             f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def holder(self) -> str:
        """' (pid N)' naming the process that last took the lock, when the file says."""
        try:
            with open(self.path, encoding="ascii") as f:
                pid = f.read().strip()
        except (OSError, ValueError):
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
