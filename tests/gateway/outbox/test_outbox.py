"""Outbox: the state machine on both stores, group commit, and recovery after SIGKILL."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import gevent
import pytest

from ccs.gateway.outbox import MemoryStore, NewMessage, Store
from ccs.gateway.outbox.base import Finish
from ccs.gateway.outbox.redis import RedisStore
from ccs.gateway.outbox.sqlite import SqliteStore
from ccs.outcome import Outcome, Status
from tests.helpers import ccs_env


@pytest.fixture(params=["memory", "sqlite", "sqlite-threadpool", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        s: Store = MemoryStore()
    elif request.param == "redis":
        s = RedisStore(request.getfixturevalue("redis_url"), name="first")
    else:
        s = SqliteStore(str(tmp_path / "o.sqlite"), threadpool=request.param.endswith("pool"))
    yield s
    s.close()


def msg(i: int, lane: str = "fcm", expires: float | None = None) -> NewMessage:
    return NewMessage(f"m{i}", lane, {"to": f"tok{i}", "message_id": f"m{i}"}, f"tok{i}",
                      expires)


def test_state_machine(store: Store) -> None:
    assert store.add([msg(1), msg(2), msg(3, "apns"), msg(4, expires=5.0)], now=1.0) == \
        [True, True, True, True]
    assert store.add([msg(1)], now=2.0) == [False]  # same id: stored once
    claimed, expired = store.claim("fcm", 10, now=10.0)
    # (oldest first within a store; a sharded Redis outbox keeps that order per shard only)
    assert sorted(r.id for r in claimed) == ["m1", "m2"] and all(r.attempts == 1 for r in claimed)
    assert [r.id for r in expired] == ["m4"] and expired[0].state == "expired"
    assert store.claim("fcm", 10, now=10.0) == ([], [])
    store.finish([Finish("m1", Outcome(Status.OK, via="ccs", message_id="0:1"))], now=11.0)
    store.finish([Finish("m1", Outcome(Status.FAILED, via="ccs"))], now=12.0)  # first wins
    r = store.get("m1")
    assert r and r.state == "ok" and r.via == "ccs" and r.provider_message_id == "0:1"
    store.release(["m2"], now=13.0)
    again, _ = store.claim("fcm", 10, now=14.0)
    assert [(r.id, r.attempts, r.resent) for r in again] == [("m2", 2, 1)]
    store.finish([Finish("m2", Outcome(Status.FAILED, via="http", error="INVALID_ARGUMENT",
                                       canonical_id="new"))], now=15.0)
    r2 = store.get("m2")
    assert r2 and r2.state == "failed" and r2.error == "INVALID_ARGUMENT"
    assert r2.canonical_id == "new" and r2.payload["to"] == "tok2"
    c = store.counts()
    assert (c["ok"], c["failed"], c["expired"], c["queued"], c["in_flight"]) == (1, 1, 1, 1, 0)
    assert store.lanes_with_queued() == ["apns"]
    assert store.get("nope") is None


def test_recover_requeues_in_flight(store: Store) -> None:
    store.add([msg(i) for i in range(5)], now=1.0)
    first = store.claim("fcm", 3, now=2.0)[0][0].id
    if isinstance(store, RedisStore):  # many gateways: only a gateway gone silent loses its own
        store.start_heartbeat()
        other = RedisStore(store.source, name="second")
        assert other.recover(now=3.0) == 0  # the first is alive: its messages stay its own
        store.close()  # gone without putting them back (its heartbeat key goes with it)
        store = other
    assert store.recover(now=3.0) == 3
    c = store.counts()
    assert c["queued"] == 5 and c["in_flight"] == 0 and c["resent"] == 3
    r = store.get(first)
    assert r and r.resent == 1 and r.attempts == 1


def test_events_once_per_key_and_retry(store: Store) -> None:
    seq, new = store.add_event("upstream", "tok:1", {"a": 1}, now=1.0)
    assert new and store.add_event("upstream", "tok:1", {"a": 1}, now=2.0) == (seq, False)
    w, _ = store.add_event("webhook", "w1", {"b": 2}, now=1.0)
    assert [e.seq for e in store.pending_events("upstream", now=5.0)] == [seq]
    store.event_retry(w, next_at=10.0, error="503", now=2.0)
    assert store.pending_events("webhook", now=5.0) == []
    (e,) = store.pending_events("webhook", now=10.0)
    assert e.attempts == 1 and e.error == "503" and e.body == {"b": 2}
    store.event_done([seq, w], now=11.0)
    assert store.pending_events("upstream", now=20.0) == [] and store.event_counts() == {}


@pytest.mark.parametrize("threadpool", [False, True])
def test_group_commit_batches_concurrent_callers(tmp_path: Path, threadpool: bool) -> None:
    s = SqliteStore(str(tmp_path / "g.sqlite"), threadpool=threadpool)
    jobs = [gevent.spawn(s.add, [msg(i)], 1.0) for i in range(400)]
    gevent.joinall(jobs, raise_error=True)
    assert all(j.value == [True] for j in jobs)
    assert s.counts()["queued"] == 400
    # 400 callers at once: far fewer transactions than callers
    assert s.commits < 40, s.commits
    s.close()
    db = sqlite3.connect(tmp_path / "g.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 400


def test_one_bad_operation_fails_alone(tmp_path: Path) -> None:
    s = SqliteStore(str(tmp_path / "b.sqlite"))
    bad = gevent.spawn(s._call, lambda db: db.execute("SELECT * FROM nowhere"))
    good = gevent.spawn(s.add, [msg(1)], 1.0)
    gevent.joinall([bad, good])
    assert isinstance(bad.exception, sqlite3.OperationalError) and good.value == [True]
    s.close()


CHILD = textwrap.dedent("""
    import sys, gevent
    from ccs.gateway.outbox.sqlite import SqliteStore
    from ccs.gateway.outbox.base import NewMessage, Finish
    from ccs.outcome import Outcome, Status
    s = SqliteStore(sys.argv[1])
    i = 0
    def adder(k):
        global i
        while True:
            batch = [NewMessage(f"m{k}-{i}-{j}", "fcm", {"to": "t"}) for j in range(20)]
            i += 1
            s.add(batch, 1.0)
            print("added", " ".join(m.id for m in batch), flush=True)
    def worker():
        while True:
            claimed, _ = s.claim("fcm", 30, 2.0)
            half = claimed[: len(claimed) // 2]
            s.finish([Finish(r.id, Outcome(Status.OK, via="test")) for r in half], 3.0)
            gevent.sleep(0)
    gevent.joinall([gevent.spawn(adder, k) for k in range(4)] + [gevent.spawn(worker)])
""")


def test_sigkill_mid_batch_then_reopen(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], env=ccs_env(),
                            stdout=subprocess.PIPE, text=True)
    acked: set[str] = set()
    assert proc.stdout
    for line in proc.stdout:
        acked.update(line.split()[1:])
        if len(acked) >= 3000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT id, state FROM messages").fetchall()
    db.close()
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids))  # each message exactly once
    assert acked <= set(ids)  # everything acknowledged to a caller survived
    states = {r[1] for r in rows}
    assert states <= {"queued", "in_flight", "ok"} and "in_flight" in states
    s = SqliteStore(str(path))
    n_in_flight = sum(1 for r in rows if r[1] == "in_flight")
    assert s.recover(now=4.0) == n_in_flight
    c = s.counts()
    assert c["in_flight"] == 0 and c["queued"] + c["ok"] == len(ids)
    assert c["resent"] == n_in_flight
    s.close()
