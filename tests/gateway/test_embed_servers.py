"""examples/chat in the servers users run: real gunicorn (2 gevent workers, Redis outbox) and
gevent.pywsgi (one process, SQLite), against the CCS emulator; deploys and kills lose nothing."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from ccs.gateway.outbox.base import Record
from ccs.gateway.outbox.redis import RedisStore
from ccs.gateway.outbox.sqlite import SqliteStore
from ccs.xmpp.emulator import CcsEmulator
from examples.chat.app import answer_id
from tests.chat_support import (
    KEY,
    SENDER,
    Load,
    Server,
    chat_env,
    children,
    gunicorn,
    longest_gap,
    pywsgi,
)
from tests.helpers import wait_until
from tests.redis_support import REDIS


@pytest.fixture
def emu(pki: Any) -> Iterator[CcsEmulator]:
    with CcsEmulator(sender_id=SENDER, server_key=KEY, pki=pki, upstream_redeliver=1.0) as e:
        yield e


def ready_sessions(emu: CcsEmulator) -> int:
    return sum(1 for c in emu.connections() if c.ready and not c.draining and c.open)


def send_upstreams(emu: CcsEmulator, n: int, tag: str) -> list[dict[str, str]]:
    """n upstream messages, each delivered twice at once with its one id: with two sessions up
    the emulator's round robin hands the copies to different sessions (different workers)."""
    ups = []
    for i in range(n):
        body = {"from": f"dev-{tag}-{i}", "message_id": f"up-{tag}-{i}"}
        for _ in range(2):
            emu.send_upstream(body["from"], {"text": f"hello {tag} {i}"},
                              message_id=body["message_id"])
        ups.append(body)
    return ups


def answers(emu: CcsEmulator, ups: list[dict[str, str]]) -> dict[str, Counter[str]]:
    """Per upstream sender: how often each downstream message id reached the emulator."""
    senders = {u["from"] for u in ups}
    out: dict[str, Counter[str]] = {s: Counter() for s in senders}
    for d in list(emu.record.downstream):
        to = d.payload.get("to")
        if to in out:
            out[to][d.message_id] += 1
    return out


def check_answered_once(emu: CcsEmulator, ups: list[dict[str, str]],
                        get: Callable[[str], Record | None], timeout: float = 90) -> int:
    """Each upstream got exactly one answer (one message id, ok in the outbox); returns how
    many answers reached the emulator twice (only ones in flight at a kill may)."""
    def all_answered() -> bool:
        got = answers(emu, ups)
        return all(got[u["from"]][answer_id(u)] for u in ups)

    wait_until(all_answered, timeout=timeout, what="every upstream answered")
    wait_until(lambda: not [o for o in emu.outstanding.values() if o.kind == "upstream"],
               timeout=timeout, what="every upstream acked")
    wait_until(lambda: all(getattr(get(answer_id(u)), "state", None) == "ok" for u in ups),
               timeout=timeout, what="every answer recorded ok")
    twice = 0
    for u in ups:
        got = answers(emu, ups)[u["from"]]
        assert set(got) == {answer_id(u)}, (u, got)  # one answer, never two different ones
        n = got[answer_id(u)]
        rec = get(answer_id(u))
        assert rec is not None and rec.state == "ok", rec
        assert rec.payload["data"] == {"echo": f"hello {u['from'][4:].replace('-', ' ')}"}
        if n > 1:
            assert rec.resent >= 1  # sent again only because it was in flight at a kill
            twice += 1
    return twice


def check_delivered(emu: CcsEmulator, load: Load, get: Callable[[str], Record | None],
                    timeout: float = 90) -> tuple[int, int]:
    """Every accepted message reached the emulator and is ok; returns (messages that
    arrived twice, messages the outbox counts as resent)."""
    ids = set(load.accepted)
    try:
        wait_until(lambda: ids <= set(emu.record.downstream_ids()), timeout=timeout,
                   what="every accepted message delivered")
    except AssertionError:
        missing = sorted(ids - set(emu.record.downstream_ids()))
        raise AssertionError(f"{len(missing)} never delivered: " + "; ".join(
            repr(get(i)) for i in missing[:5])) from None
    wait_until(lambda: all(getattr(get(i), "state", None) == "ok" for i in ids),
               timeout=timeout, what="every message recorded ok")
    seen = Counter(i for i in emu.record.downstream_ids() if i in ids)
    twice = [i for i, n in seen.items() if n > 1]
    resent = [i for i in ids if get(i).resent]  # type: ignore[union-attr]
    assert set(twice) <= set(resent), "only messages put back or taken over go out again"
    return len(twice), len(resent)


def wait_gateways(store: RedisStore, emu: CcsEmulator, n: int, timeout: float = 60,
                  server: Server | None = None) -> None:
    """n workers up with a CCS session each (and, given the server, they are all its workers:
    none still booting, none on its way out)."""
    def up() -> bool:
        gws = store.gateways()
        if server is not None and {g["pid"] for g in gws} != set(children(server.pid)):
            return False
        return len(gws) == n and all(
            any(s["state"] == "ready" for s in g.get("sessions", [])) for g in gws)
    wait_until(up, timeout=timeout, what=f"{n} workers with a CCS session")


# gunicorn, 2 gevent workers, Redis ---------------------------------------------------------

def test_gunicorn_two_workers_deliver_once_and_answer_each_upstream_once(
        emu: CcsEmulator, redis_url: str) -> None:
    store = RedisStore(redis_url)
    server = gunicorn(chat_env(emu, redis_url))
    try:
        load = Load(server.url())
        wait_gateways(store, emu, 2)
        assert len(children(server.pid)) == 2
        ids = [f"n{i:04d}" for i in range(500)]
        load.run(ids)
        assert set(load.accepted) == set(ids) and load.unavailable == 0
        twice, resent = check_delivered(emu, load, store.get)
        assert (twice, resent) == (0, 0)
        assert Counter(emu.record.downstream_ids()).most_common(1)[0][1] == 1
        # the record through the API
        resp = load.http.request("GET", f"/messages/{ids[0]}")
        assert resp.status == 200 and resp.json()["state"] == "ok"
        assert resp.json()["to"] == f"tok-{ids[0]}"
        assert load.http.request("GET", "/messages/nope").status == 404
        # 30 upstream messages, each seen by both workers' sessions, answered once
        ups = send_upstreams(emu, 30, "a")
        assert check_answered_once(emu, ups, store.get) == 0
        deliveries = [s for s in emu.record.of_kind("upstream")]
        assert len(deliveries) >= 60
        assert len({s.conn_id for s in deliveries}) >= 2  # both workers' sessions saw them
        r = redis.Redis.from_url(REDIS, decode_responses=True)
        # stored once each across the workers
        assert sum(r.xlen(k) for k in store.stream_keys("upstream")) == 30
        r.close()
        load.close()
    finally:
        rc = server.stop()
        store.close()
    assert rc == 0, server.text()[-3000:]
    assert "Traceback" not in server.text(), server.text()[-3000:]
    assert server.text().count("ccs gateway stopped in") == 2


def deploy_under_load(emu: CcsEmulator, redis_url: str, act: Callable[[Server, RedisStore], None],
                      what: str, **env: str) -> tuple[list[int], int, list[int]]:
    """Post 600 messages and 30 upstreams; `act` runs on the server in the middle. Returns
    the workers running at the end, how many messages were re-sent and what the stops during
    the run put back."""
    store = RedisStore(redis_url)
    server = gunicorn(chat_env(emu, redis_url, **env))
    try:
        load = Load(server.url())
        wait_gateways(store, emu, 2)
        ids = [f"{what}{i:04d}" for i in range(600)]
        marks: dict[str, float] = {}
        ups: list[dict[str, str]] = []

        def during(i: int) -> None:
            if i == 150:
                ups.extend(send_upstreams(emu, 15, f"{what}1"))
            if i == 250:
                marks["at"] = time.time()
                act(server, store)
            if i == 400:
                ups.extend(send_upstreams(emu, 15, f"{what}2"))

        load.run(ids, during=during)
        assert set(load.accepted) == set(ids)
        twice, resent = check_delivered(emu, load, store.get)
        twice_up = check_answered_once(emu, ups, store.get)
        wait_gateways(store, emu, 2, server=server)  # back to two workers, all booted
        workers = children(server.pid)
        stops = put_back(server)
        end = max(load.accepted.values())
        accepted_gap = longest_gap(list(load.accepted.values()), marks["at"], end)
        sent_times = [d.time for d in list(emu.record.downstream)]
        sent_gap = longest_gap(sent_times, marks["at"], end)
        c = store.counts()
        assert (c["queued"], c["in_flight"], c["failed"], c["unknown"], c["expired"]) == \
            (0, 0, 0, 0, 0)
        print(f"deploy cost ({what}): {len(ids)} messages + {len(ups)} upstreams; "
              f"re-sent (outbox resent) {resent}, reached CCS twice {twice}, upstream answers "
              f"twice {twice_up}; longest pause: accepting {accepted_gap:.2f}s, sending "
              f"{sent_gap:.2f}s; POST retries {load.retries}, 503s {load.unavailable}; "
              f"put back by stops {put_back(server)}, resent in all {c['resent']}")
        load.close()
    finally:
        rc = server.stop()
        store.close()
    assert rc == 0, server.text()[-3000:]
    return workers, resent, stops


def test_gunicorn_graceful_reload_in_the_middle_loses_nothing(emu: CcsEmulator,
                                                              redis_url: str) -> None:
    """Acks come 0.3 s late: the old workers hold sent messages when told to go, wait for
    their answers and put nothing back."""
    emu.set_faults(ack_delay=0.3)
    old: list[int] = []

    def reload(server: Server, store: RedisStore) -> None:
        old.extend(children(server.pid))
        server.signal(signal.SIGHUP)

    # a takeover needs a worker silent for 10 s here: a busy machine (new workers booting)
    # must not make a live one look dead
    workers, resent, put_back_at_reload = deploy_under_load(
        emu, redis_url, reload, "hup", CCS_OUTBOX_RECLAIM_IDLE="10", CCS_OUTBOX_HEARTBEAT="1")
    assert len(old) == 2 and len(workers) == 2 and not set(old) & set(workers)
    assert resent == 0  # drained, not put back nor taken over
    assert put_back_at_reload == [0, 0]


def test_gunicorn_worker_sigkilled_in_the_middle_loses_nothing(emu: CcsEmulator,
                                                               redis_url: str) -> None:
    """Acks come 0.3 s late, so the killed worker holds messages sent and unanswered."""
    emu.set_faults(ack_delay=0.3)
    killed: list[int] = []

    def kill(server: Server, store: RedisStore) -> None:
        def busy() -> list[dict[str, Any]]:
            return [g for g in store.gateways() if g.get("in_flight", 0) >= 5]
        pid = wait_until_value(busy, what="a worker with messages in flight")[0]["pid"]
        assert pid in children(server.pid)
        killed.append(pid)
        os.kill(pid, signal.SIGKILL)

    workers, resent, _ = deploy_under_load(emu, redis_url, kill, "kill")
    assert len(workers) == 2 and killed[0] not in workers
    assert resent > 0  # it died holding messages; the other worker took them over


def put_back(server: Server) -> list[int]:
    """What each worker's gateway stop put back in the queue (from the workers' log)."""
    return [int(m) for m in re.findall(r"(\d+) in-flight messages put back", server.text())]


def wait_until_value(fn: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    box: list[Any] = []
    wait_until(lambda: bool(box.append(fn()) or box[-1]), timeout=timeout, what=what)
    return box[-1]


def test_gunicorn_max_requests_recycling_loses_nothing(emu: CcsEmulator, redis_url: str) -> None:
    """--max-requests: each worker leaves after 150 requests, as on a graceful reload."""
    store = RedisStore(redis_url)
    server = gunicorn(chat_env(emu, redis_url, CCS_OUTBOX_RECLAIM_IDLE="10",
                               CCS_OUTBOX_HEARTBEAT="1"), extra=["--max-requests", "150"])
    try:
        load = Load(server.url())
        wait_gateways(store, emu, 2)
        ids = [f"r{i:04d}" for i in range(600)]
        load.run(ids)
        twice, resent = check_delivered(emu, load, store.get)
        assert twice == 0
        # A loaded machine may leave a recycled worker's last messages unanswered at its stop:
        # they are put back (and counted in its log line), then sent once by another worker.
        wait_until(lambda: resent <= sum(put_back(server)), what="re-sent only what was put back")
        load.close()
        # the recycled workers leave "after the current request", up to a second or so later;
        # until then they still look like the server's two live workers
        wait_until(lambda: len(put_back(server)) >= 2, timeout=60, what="the recycled workers gone")
        # the replacements are up before the stop (a worker signalled while gunicorn is still
        # forking it misses the signal and is killed at the graceful timeout)
        wait_gateways(store, emu, 2, server=server)
    finally:
        rc = server.stop()
        store.close()
    assert rc == 0, server.text()[-3000:]
    assert server.text().count("Autorestarting worker") >= 2
    # every recycled worker stopped its gateway cleanly
    assert len(put_back(server)) >= 4, server.text()[-6000:]


def test_gunicorn_stop_fits_the_graceful_timeout_and_puts_unsent_messages_back(
        emu: CcsEmulator, redis_url: str) -> None:
    """CCS stops answering; the master is told to stop with a 4 s graceful timeout. Each worker
    stops its gateway within what is left (not its 5 s stop timeout: the master would SIGKILL
    it first), putting every unanswered message back; the next start sends them."""
    store = RedisStore(redis_url)
    env = chat_env(emu, redis_url)
    server = gunicorn(env, extra=["--graceful-timeout", "4"])
    try:
        load = Load(server.url())
        wait_gateways(store, emu, 2)
        emu.set_faults(stall=True)
        ids = [f"s{i:03d}" for i in range(50)]
        load.run(ids)
        wait_until(lambda: store.counts()["in_flight"] == 50, what="all 50 in flight")
        began = time.monotonic()
        rc = server.stop()
        took = time.monotonic() - began
        load.close()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    assert rc == 0, server.text()[-3000:]
    assert took < 4 + 2, took  # the master's own deadline, and it never had to kill
    assert "Worker graceful timeout" not in server.text()
    c = store.counts()
    assert (c["in_flight"], c["queued"], c["resent"]) == (0, 50, 50), c
    assert len(put_back(server)) == 2 and sum(put_back(server)) == 50, put_back(server)
    emu.set_faults(stall=False)
    again = gunicorn(env)
    try:
        again.url()
        wait_until(lambda: store.counts()["ok"] == 50, timeout=60, what="sent after restart")
    finally:
        assert again.stop() == 0
        store.close()
    assert set(ids) <= set(emu.record.downstream_ids())


def test_gunicorn_refuses_several_workers_on_one_sqlite_file(emu: CcsEmulator,
                                                             tmp_path: Any) -> None:
    path = str(tmp_path / "outbox.sqlite")
    server = gunicorn(chat_env(emu, path))
    rc = server.wait(timeout=60)
    assert rc == 1
    text = server.text()
    assert "outbox.path: 2 workers cannot share the SQLite outbox" in text, text
    assert "CCS_OUTBOX=redis://" in text and "Traceback" not in text


# gevent.pywsgi, one process, SQLite --------------------------------------------------------

def test_pywsgi_with_sqlite_delivers_answers_and_survives_restarts(emu: CcsEmulator,
                                                                   tmp_path: Any) -> None:
    path = str(tmp_path / "outbox.sqlite")
    env = chat_env(emu, path)
    server = pywsgi(env)
    load = Load(server.url())
    # a second process on the same file: a clear error naming the setting, no traceback
    second = pywsgi(env)
    assert second.wait() == 2
    assert "outbox.path:" in second.text() and "in use by another running gateway (pid" in \
        second.text() and "Traceback" not in second.text()
    reader = SqliteStore(path)  # reads beside the running server, as `ccs status` does
    get = reader.get
    ids = [f"w{i:04d}" for i in range(500)]
    load.run(ids)
    assert load.unavailable == 0
    assert check_delivered(emu, load, get) == (0, 0)
    ups = send_upstreams(emu, 30, "w")
    assert check_answered_once(emu, ups, get) == 0
    # a deploy (SIGTERM, start again) and a kill (SIGKILL, start again) under load
    costs = []
    for sig, what in ((signal.SIGTERM, "restart"), (signal.SIGKILL, "kill")):
        more = [f"{what}{i:04d}" for i in range(400)]
        ups2: list[dict[str, str]] = []
        box: dict[str, Any] = {}

        def during(i: int, sig: int = sig, what: str = what, ups2: Any = ups2,
                   box: Any = box) -> None:
            nonlocal server
            if i == 100:
                ups2.extend(send_upstreams(emu, 15, what))
            if i == 200:
                box["at"] = time.time()
                server.signal(sig)
                box["rc"] = server.proc.wait(timeout=60)
                server = pywsgi(env)
                load.url = server.url()
                load.http.close()
                load.http = Load(load.url).http

        load.run(more, during=during)
        assert box["rc"] == (0 if sig == signal.SIGTERM else -signal.SIGKILL), server.text()
        twice, resent = check_delivered(emu, load, get)
        twice_up = check_answered_once(emu, ups + ups2, get)
        gap = longest_gap(list(load.accepted.values()), box["at"], max(load.accepted.values()))
        costs.append(f"{what}: re-sent {resent}, reached CCS twice {twice}, upstream answers "
                     f"twice {twice_up}, longest pause accepting {gap:.2f}s")
    print("deploy cost (pywsgi, SQLite): " + "; ".join(costs))
    load.close()
    reader.close()
    assert server.stop() == 0, server.text()
    assert "stopped in" in server.text()
