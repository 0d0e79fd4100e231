"""examples/chat in-process (Flask's test client) and what embedding needs from the library:
nothing opened at import, start/stop idempotent, fork-aware, handlers retried, answers once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import gevent
import gevent.event
import pytest

import ccs.gateway.outbox.redis as redis_outbox
from ccs.gateway.dispatcher import Stopping
from ccs.gateway.embed import Embedded
from ccs.gateway.outbox import MemoryStore
from ccs.gateway.outbox.redis import RedisStore
from ccs.gateway.settings import ConfigError, Settings
from ccs.gateway.supervisor import Supervisor
from ccs.xmpp.emulator import CcsEmulator
from examples.chat.app import answer_id, create_app, setup
from tests.helpers import ROOT, ccs_env, wait_until
from tests.providers import LocalProvider

pytest_plugins = ["tests.emulator_fixtures"]  # the make_emu fixture

BASE = Settings.defaults().replace(admin__enabled=False, gateway__restart_backoff=0.01,
                                   gateway__ccs_startup_grace=0.0)


def settings_for(emu: CcsEmulator, outbox: str) -> Settings:
    return Settings.load(environ={
        "CCS_OUTBOX": outbox, "CCS_ADMIN_ENABLED": "0", "CCS_HOST": emu.host,
        "CCS_PORT": str(emu.port), "CCS_SENDER_ID": emu.sender_id, "CCS_SERVER_KEY": "secret",
        "CCS_CA_FILE": emu.ca_file, "CCS_CONNECTIONS": "1", "CCS_FALLBACK_PROVIDER": "",
        "CCS_STARTUP_GRACE": "0"})


@pytest.fixture
def chat(make_emu: Any, tmp_path: Any) -> Iterator[SimpleNamespace]:
    emu = make_emu()
    settings = settings_for(emu, str(tmp_path / "outbox.sqlite"))
    gw = Embedded(setup, settings=lambda: settings)
    yield SimpleNamespace(emu=emu, gw=gw, client=create_app(gw).test_client(),
                          settings=settings)
    gw.stop()


def test_importing_the_app_opens_nothing() -> None:
    """A pre-fork server imports before it forks: no socket, file, thread or hub may exist."""
    code = """
import json, os, pkgutil, importlib, threading
before = set(os.listdir('/proc/self/fd'))
import ccs, http_fallback
names = [m.name for p in (ccs, http_fallback) for m in pkgutil.walk_packages(
    p.__path__, p.__name__ + '.') if not m.name.endswith('__main__')]
for n in names + ['examples.chat.app', 'examples.chat.serve']:
    importlib.import_module(n)
from gevent._hub_local import get_hub_if_exists
print(json.dumps({"modules": len(names), "fds": sorted(set(os.listdir('/proc/self/fd')) - before),
                  "threads": threading.active_count(), "hub": get_hub_if_exists() is not None}))
"""
    out = subprocess.run([sys.executable, "-c", code], env=ccs_env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["modules"] > 50
    assert got == {"modules": got["modules"], "fds": [], "threads": 1, "hub": False}


def post(client: Any, body: Any) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post("/notify", data=data, content_type="application/json")


@pytest.mark.parametrize(("body", "field"), [
    ("not json", "body"),
    ([1, 2], "body"),
    ({"data": {}}, "to"),
    ({"to": "", "data": {}}, "to"),
    ({"to": "t", "data": ["x"]}, "data"),
    ({"to": "t"}, "data"),
    ({"to": "t", "data": {"k": 1}}, "data.k"),
    ({"to": "t", "data": {"from": "x"}}, "data.from"),
    ({"to": "t", "data": {}, "message_id": 5}, "message_id"),
    ({"to": "t", "data": {}, "priority": "high"}, "priority"),
])
def test_bad_input_is_400_naming_the_field(chat: SimpleNamespace, body: Any, field: str) -> None:
    chat.gw.start()
    resp = post(chat.client, body)
    assert resp.status_code == 400 and resp.json["field"] == field, resp.json
    assert resp.json["error"]
    assert chat.gw.supervisor.store.counts()["queued"] == 0


def test_notify_stores_then_202_and_the_record_follows(chat: SimpleNamespace) -> None:
    chat.gw.start()
    resp = post(chat.client, {"to": "tok-1", "data": {"k": "v"}})
    assert resp.status_code == 202
    ident = resp.json["id"]
    assert chat.gw.supervisor.status(ident) is not None  # stored before the 202
    wait_until(lambda: chat.client.get(f"/messages/{ident}").json["state"] == "ok",
               what="the message acked")
    rec = chat.client.get(f"/messages/{ident}").json
    assert rec["to"] == "tok-1" and rec["via"] == "ccs" and rec["attempts"] == 1
    assert chat.emu.record.downstream_ids() == [ident]
    # the client's message_id makes a retried POST store (and send) once
    first = post(chat.client, {"to": "tok-2", "data": {}, "message_id": "mine-1"})
    again = post(chat.client, {"to": "tok-2", "data": {}, "message_id": "mine-1"})
    assert first.status_code == again.status_code == 202
    assert first.json == again.json == {"id": "mine-1"}
    wait_until(lambda: chat.gw.supervisor.status("mine-1")["state"] == "ok", what="acked")
    assert chat.emu.record.downstream_ids().count("mine-1") == 1
    # the same message_id with other content is a reuse of the key, not a retry
    other = post(chat.client, {"to": "tok-3", "data": {}, "message_id": "mine-1"})
    assert other.status_code == 409 and other.json["field"] == "message_id"
    missing = chat.client.get("/messages/nope")
    assert missing.status_code == 404 and missing.json["field"] == "id"


def test_503_with_retry_after_before_start_and_after_stop(chat: SimpleNamespace) -> None:
    for when in ("before start", "after stop"):
        resp = post(chat.client, {"to": "t", "data": {}})
        assert resp.status_code == 503, when
        assert resp.headers["Retry-After"] == "1"
        assert chat.client.get("/messages/x").status_code == 503
        if when == "before start":
            chat.gw.start()
            assert post(chat.client, {"to": "t", "data": {}}).status_code == 202
            chat.gw.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_503_while_the_redis_outbox_is_down(make_emu: Any, tmp_path: Any) -> None:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL)
    emu = make_emu()
    settings = settings_for(emu, f"redis://127.0.0.1:{port}/0?prefix=chat503")
    gw = Embedded(setup, settings=lambda: settings)
    client = create_app(gw).test_client()
    try:
        deadline = time.monotonic() + 20
        while True:  # the private Redis takes a moment to listen
            try:
                gw.start()
                break
            except ConfigError:
                assert time.monotonic() < deadline, "private redis-server never answered"
                gevent.sleep(0.05)
        ok = post(client, {"to": "t", "data": {}})
        assert ok.status_code == 202
        proc.kill()
        proc.wait()
        resp = post(client, {"to": "t", "data": {}})
        assert resp.status_code == 503 and resp.headers["Retry-After"] == "5", resp.json
        assert "outbox cannot take writes" in resp.json["error"]
        assert client.get(f"/messages/{ok.json['id']}").status_code == 503
    finally:
        if proc.poll() is None:
            proc.kill()
        gw.stop(timeout=0)


def test_a_second_gateway_on_one_sqlite_file_is_refused_clearly(chat: SimpleNamespace) -> None:
    chat.gw.start()
    other = Embedded(setup, settings=lambda: chat.settings)
    with pytest.raises(ConfigError) as exc:
        other.start()
    assert exc.value.key == "outbox.path"
    assert f"(pid {os.getpid()})" in str(exc.value) and "Redis outbox" in str(exc.value)
    assert not other.running and chat.gw.running


# the Supervisor's lifecycle -----------------------------------------------------------------

def local(**settings: Any) -> tuple[Supervisor, LocalProvider]:
    ccs = LocalProvider("ccs")
    return Supervisor(BASE.replace(**settings), store=MemoryStore(), providers={"ccs": ccs}), ccs


def test_start_and_stop_are_idempotent() -> None:
    sup, ccs = local()
    assert sup.start() is sup and sup.start() is sup
    assert ccs.started == 1 and sup.running
    ccs.gate.clear()  # hold sends: stop has something to put back
    ids = sup.enqueue_many([{"to": f"t{i}"} for i in range(5)])
    wait_until(lambda: sum(sup.dispatcher.in_flight().values()) == 5, what="in flight")
    began = time.monotonic()
    results = [gevent.spawn(sup.stop, 0.2), gevent.spawn(sup.stop, 0.2)]
    gevent.joinall(results, raise_error=True)
    assert time.monotonic() - began < 3  # held sends do not hold the stop past its deadline
    assert sorted(results[0].value) == sorted(results[1].value) == sorted(ids)
    assert sorted(sup.stop()) == sorted(ids)  # a third call: the same answer
    assert ccs.stopped == 1 and not sup.running
    assert all(sup.store.get(i).state == "queued" for i in ids)
    with pytest.raises(RuntimeError, match="make a new one"):
        sup.start()


class GatedStore(MemoryStore):
    """Outcomes are recorded only once `gate` opens (a slow outbox)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = gevent.event.Event()
        self.in_finish = gevent.event.Event()

    def finish(self, done: Any, now: float) -> None:
        self.in_finish.set()
        self.gate.wait()
        super().finish(done, now)


def test_stop_does_not_put_back_a_message_whose_outcome_is_being_recorded() -> None:
    store = GatedStore()
    sup = Supervisor(BASE, store=store, providers={"ccs": LocalProvider("ccs")}).start()
    mid = sup.enqueue({"to": "t"})
    store.in_finish.wait(timeout=5)  # acked; the finisher is recording it
    stopping = gevent.spawn(sup.stop, 1.0)
    wait_until(lambda: not sup.dispatcher.accepting, what="the stop under way")
    store.gate.set()
    assert stopping.get(timeout=10) == []  # it was answered: nothing to put back
    rec = store.get(mid)
    assert rec.state == "ok" and rec.resent == 0


def test_a_forked_child_refuses_the_parents_supervisor_and_leaves_it_alone() -> None:
    sup, ccs = local()
    sup.start()
    pid = os.fork()
    if pid == 0:  # the child: no gevent I/O, just the checks, then out
        code = 1
        try:
            try:
                sup.enqueue({"to": "t"})
            except RuntimeError as exc:
                if "before a fork" in str(exc) and sup.stop() == [] and not sup.running:
                    code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sup.running  # the parent's copy still works
    assert sup.result(sup.enqueue({"to": "t"})).get(timeout=5).ok
    sup.stop()


def test_an_upstream_handler_that_raises_gets_the_record_again() -> None:
    sup, _ = local()
    seen: list[int] = []

    def flaky(rec: Any) -> None:
        seen.append(rec.seq)
        if len(seen) == 1:
            raise OSError("the app could not store its answer")

    sup.upstream.add(flaky)
    sup.start()
    up = SimpleNamespace(sender="dev", message_id="u1", category="c", data={"text": "hi"})
    sup.inbound.store_upstream(up)
    wait_until(lambda: len(seen) == 2, timeout=10, what="the record handed over again")
    assert seen[0] == seen[1] and sup.inbound.retried == 1
    wait_until(lambda: not sup.store.event_counts(), what="the record done")
    sup.stop()


def test_an_upstream_is_answered_once_when_a_gateway_dies_after_taking_it(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateway A stores an upstream and takes it, then dies before marking it done: gateway B
    hands it out once A's hold lapses. A may even have stored its answer already: the answer's
    id comes from the upstream, so it is stored, and sent, once."""
    monkeypatch.setattr(redis_outbox, "EVENT_HOLD", 1.0)
    dead = RedisStore(redis_url)  # gateway A: stores, takes, dies
    body = {"from": "dev-9", "message_id": "up-9", "category": "c", "data": {"text": "yo"}}
    dead.add_event("upstream", "dev-9\x00up-9", body, time.time())
    taken = dead.pending_events("upstream", time.time())
    assert [e.body for e in taken] == [body]
    ccs = LocalProvider("ccs")
    b = Supervisor(BASE, store=RedisStore(redis_url), providers={"ccs": ccs})
    setup(b)
    b.start()
    b.enqueue({"to": "dev-9", "message_id": answer_id(body), "data": {"echo": "yo"}})  # A's
    assert not b.store.pending_events("upstream", time.time())  # still held for A
    shard, seq = taken[0].seq % b.store.shards, taken[0].seq // b.store.shards  # seq: shard
    zset = f"{b.store.ps[shard]}ep:upstream"
    wait_until(lambda: b.store.redis.zscore(zset, seq) <= time.time(), what="A's hold over")
    b.inbound.wake()
    wait_until(lambda: not b.store.event_counts(), what="B handled the upstream")
    wait_until(lambda: b.store.get(answer_id(body)).state == "ok", what="answer acked")
    assert [m["message_id"] for m in ccs.received] == [answer_id(body)]
    b.stop()
    b.store.close()
    dead.close()


def test_embedded_stop_without_start_and_supervisor_when_not_running() -> None:
    gw = Embedded(setup, settings=lambda: BASE)
    assert gw.stop() == [] and not gw.running
    with pytest.raises(Stopping):
        gw.supervisor  # noqa: B018
