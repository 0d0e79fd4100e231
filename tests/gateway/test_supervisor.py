"""Supervisor, router and dispatcher over the Provider seam with in-process test providers."""

from __future__ import annotations

from pathlib import Path

import gevent
import pytest

from ccs.gateway.outbox import MemoryStore
from ccs.gateway.outbox.sqlite import SqliteStore
from ccs.gateway.router import RouteError, ccs_to_fcm_v1
from ccs.gateway.settings import Settings
from ccs.gateway.supervisor import Supervisor
from ccs.outcome import Status, TokenEventKind
from tests.helpers import wait_until
from tests.providers import LocalProvider

BASE = Settings.defaults().replace(admin__enabled=False, gateway__restart_backoff=0.01,
                                   gateway__ccs_startup_grace=0.0)


def make(providers: dict[str, LocalProvider], store=None, **settings) -> Supervisor:
    return Supervisor(BASE.replace(**settings), store=store or MemoryStore(),
                      providers=providers).start()


def test_messages_reach_one_outcome_and_record_their_path() -> None:
    ccs, http = LocalProvider("ccs"), LocalProvider("http")
    sup = make({"ccs": ccs, "http": http})
    ids = sup.enqueue_many([{"to": f"t{i}", "data": {"n": str(i)}} for i in range(50)])
    outcomes = [sup.result(i).get(timeout=5) for i in ids]
    assert all(o.status is Status.OK and o.via == "ccs" for o in outcomes)
    assert len(ccs.received) == 50 and not http.received
    assert {m["message_id"] for m in ccs.received} == set(ids)
    assert sup.status(ids[0])["state"] == "ok" and sup.status(ids[0])["via"] == "ccs"
    # same message_id again: stored once, sent once
    again = sup.enqueue({"to": "t0", "data": {"n": "0"}, "message_id": ids[0]})
    assert again == ids[0] and sup.result(again).get(timeout=1).ok
    assert len(ccs.received) == 50
    st = sup.stats()
    assert st["outbox"]["ok"] == 50 and st["providers"]["ccs"]["messages_sent"] == 50
    assert st["latency_ms"]["p50"] is not None
    sup.stop()
    assert ccs.stopped == 1 and http.stopped == 1


def test_router_falls_back_to_http_and_honours_via() -> None:
    ccs, http = LocalProvider("ccs"), LocalProvider("http")
    sup = make({"ccs": ccs, "http": http})
    ccs.is_healthy = False
    o = sup.result(sup.enqueue({"to": "tokA", "data": {"k": "1"}, "time_to_live": 60,
                                "priority": "high"})).get(timeout=5)
    assert o.via == "http" and http.received[0]["token"] == "tokA"
    assert http.received[0]["data"] == {"k": "1"}
    assert http.received[0]["android"]["priority"] == "HIGH"
    ccs.is_healthy = True
    forced = sup.enqueue({"to": "tokB"}, via="http")
    assert sup.result(forced).get(timeout=5).via == "http"
    assert sup.status(forced)["via"] == "http" and sup.status(forced)["lane"] == "http"
    with pytest.raises(RouteError) as exc:
        sup.enqueue({"to": "t"}, via="apns")
    assert exc.value.field == "via"
    with pytest.raises(RouteError) as exc:
        sup.enqueue({"to": "t", "time_to_live": -1})
    assert "time_to_live" in str(exc.value)
    sup.stop()


def test_ccs_to_fcm_v1_shapes() -> None:
    assert ccs_to_fcm_v1({"to": "/topics/news", "notification": {
        "title": "T", "android_channel_id": "c"}, "collapse_key": "k"}) == {
        "topic": "news", "notification": {"title": "T"},
        "android": {"collapse_key": "k", "notification": {"channel_id": "c"}}}
    assert ccs_to_fcm_v1({"condition": "'a' in topics"}) == {"condition": "'a' in topics"}


def test_a_crashed_child_is_restarted_with_backoff() -> None:
    sup = make({"ccs": LocalProvider("ccs")})
    runs = []
    hold = gevent.event.Event()

    def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError(f"crash {len(runs)}")
        hold.wait()

    child = sup.add_child("flaky", flaky)
    wait_until(lambda: child.running and len(runs) == 3, what="third run")
    assert child.restarts == 2 and child.last_error == "RuntimeError: crash 2"
    assert sup.health()["children"]["flaky"]["restarts"] == 2
    sup.stop()
    assert not child.greenlet or child.greenlet.dead


def test_clean_stop_leaves_unsent_work_queued(tmp_path: Path) -> None:
    path = str(tmp_path / "out.sqlite")
    slow = LocalProvider("ccs")
    slow.gate.clear()
    sup = make({"ccs": slow}, store=SqliteStore(path), gateway__concurrency=5)
    ids = sup.enqueue_many([{"to": f"t{i}"} for i in range(20)])
    wait_until(lambda: len(slow.received) == 5, what="five in flight")
    left = sup.stop(timeout=0.1)
    sup.store.close()
    assert sorted(left) == sorted(m["message_id"] for m in slow.received)
    store = SqliteStore(path)
    c = store.counts()
    assert c["queued"] == 20 and c["in_flight"] == 0 and c["resent"] == 5  # may repeat
    store.close()
    # the next start sends them all
    fast = LocalProvider("ccs")
    sup2 = make({"ccs": fast}, store=SqliteStore(path))
    assert all(sup2.result(i).get(timeout=5).ok for i in ids)
    assert sorted(m["message_id"] for m in fast.received) == sorted(ids)
    sup2.stop()
    sup2.store.close()


def test_a_slow_provider_never_starves_the_others() -> None:
    ccs, apns = LocalProvider("ccs"), LocalProvider("apns")
    apns.gate.clear()  # APNs hangs
    sup = make({"ccs": ccs, "apns": apns}, gateway__concurrency=4)
    stuck = sup.enqueue_many([{"to": f"a{i}"} for i in range(40)], via="apns")
    fcm = sup.enqueue_many([{"to": f"f{i}"} for i in range(200)])
    assert all(sup.result(i).get(timeout=5).ok for i in fcm)
    assert len(apns.received) == 4  # its own limit, nothing more
    assert sup.stats()["providers"]["apns"]["dispatching"] == 4
    apns.gate.set()
    assert all(sup.result(i).get(timeout=5).ok for i in stuck)
    sup.stop()


def test_queued_past_time_to_live_ends_expired() -> None:
    now = [1000.0]
    p = LocalProvider("ccs")
    p.gate.clear()
    sup = Supervisor(BASE.replace(gateway__concurrency=1), store=MemoryStore(),
                     providers={"ccs": p}, clock=lambda: now[0]).start()
    first = sup.enqueue({"to": "t1"})
    late = sup.enqueue({"to": "t2", "time_to_live": 10})
    wait_until(lambda: len(p.received) == 1, what="first in flight")
    now[0] += 20
    p.gate.set()
    assert sup.result(first).get(timeout=5).ok
    o = sup.result(late).get(timeout=5)
    assert o.status is Status.EXPIRED and len(p.received) == 1
    assert sup.status(late)["state"] == "expired"
    sup.stop()


def test_token_events_reach_python_callbacks() -> None:
    p = LocalProvider("ccs")
    p.fail_tokens["dead"] = "DEVICE_UNREGISTERED"
    sup = make({"ccs": p})
    seen = []
    sup.token_events.add(seen.append)
    o = sup.result(sup.enqueue({"to": "dead"})).get(timeout=5)
    assert o.status is Status.FAILED and o.error == "DEVICE_UNREGISTERED"
    wait_until(lambda: seen, what="token event")
    assert seen[0].kind is TokenEventKind.UNREGISTERED and seen[0].token == "dead"
    sup.stop()


def test_bad_messages_are_refused_before_they_are_stored() -> None:
    sup = make({"ccs": LocalProvider("ccs")})
    for bad, field in (({"data": {"a": "b"}}, "to"), ({"to": "t", "data": {"n": 1}}, "data.n"),
                       ({"to": "t", "priority": "urgent"}, "priority"), ("text", "JSON object")):
        with pytest.raises(RouteError) as exc:
            sup.enqueue_many([{"to": "fine"}, bad])  # the whole batch is refused
        assert field in str(exc.value) and str(exc.value).startswith("messages[1]")
    assert sup.store.counts()["queued"] + sup.store.counts()["ok"] == 0
    sup.stop()


def test_a_message_the_provider_rejects_fails_with_its_reason() -> None:
    p = LocalProvider("ccs")
    sup = make({"ccs": p})

    def refuse(message: dict) -> None:
        raise ValueError("to: refused by the provider")

    p.on_send = refuse
    o = sup.result(sup.enqueue({"to": "t"})).get(timeout=5)
    assert o.status is Status.FAILED and o.error == "INVALID_MESSAGE" and "refused" in o.description
    sup.stop()


def test_restart_after_crash_resends_in_flight(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite")
    store = SqliteStore(path)
    from ccs.gateway.outbox.base import NewMessage
    store.add([NewMessage(f"m{i}", "fcm", {"to": f"t{i}", "message_id": f"m{i}"}, f"t{i}")
               for i in range(10)], now=1.0)
    store.claim("fcm", 4, now=2.0)  # as if the process died with four in flight
    store.close()
    p = LocalProvider("ccs")
    sup = make({"ccs": p}, store=SqliteStore(path))
    assert sup.recovered == 4
    assert all(sup.result(f"m{i}").get(timeout=5).ok for i in range(10))
    assert sup.stats()["outbox"]["resent"] == 4 and len(p.received) == 10
    sup.stop()
    sup.store.close()


def test_router_waits_for_ccs_during_startup_grace() -> None:
    from ccs.gateway.router import Router

    now = [0.0]
    health = {"ccs": False, "http": True}
    r = Router(lambda: health, "http", grace_until=5.0, clock=lambda: now[0])
    assert r.choose("fcm") == "ccs"
    now[0] = 6.0
    assert r.choose("fcm") == "http"
    health["ccs"] = True
    assert r.choose("fcm") == "ccs" and r.choose("apns") == "apns"
    assert r.lanes() == ["fcm", "ccs", "http"]


def test_provider_models_built_from_stored_json() -> None:
    import dataclasses

    from ccs.gateway import providers
    from http_fallback.adapt import dataclass_adapter

    @dataclasses.dataclass
    class Note:
        device: str
        alert: str | None = None

    providers.register("apns-test", lambda env: LocalProvider("apns-test"),
                       dataclass_adapter(Note, {"to": "device", "message_id": None}))
    try:
        assert providers.to_provider("apns-test", {"to": "d1", "alert": "hi",
                                                   "message_id": "x"}) == Note("d1", "hi")
        with pytest.raises(ValueError) as exc:
            providers.to_provider("apns-test", {"to": "d1", "colour": "red"})
        assert "colour" in str(exc.value)
        assert providers.to_provider("http", {"to": "t", "data": {"a": 1}}) == {
            "token": "t", "data": {"a": "1"}}
        assert providers.to_provider("ccs", {"to": "t"}) == {"to": "t"}
    finally:
        providers.unregister("apns-test")


def test_a_failed_start_stops_what_it_started(tmp_path: Path) -> None:
    class Broken(LocalProvider):
        def start(self) -> None:
            raise RuntimeError("cannot start")

    good = LocalProvider("ccs")
    sup = Supervisor(BASE.replace(outbox__path=str(tmp_path / "f.sqlite")),
                     providers={"ccs": good, "apns": Broken("apns")})
    with pytest.raises(RuntimeError):
        sup.start()
    assert good.started == 1 and good.stopped == 1
    assert sup.store._closed  # type: ignore[attr-defined]
    other = make({"ccs": LocalProvider("ccs")})
    with pytest.raises(KeyError):
        other.result("never-enqueued")
    other.stop()


def test_stored_json_becomes_each_providers_own_message() -> None:
    from ccs.gateway import providers
    from http_fallback.c2dm.model import C2dmMessage
    from http_fallback.legacy.model import LegacyMessage
    from http_fallback.mpns.model import CycleTile, MpnsMessage, Raw, Toast

    legacy = providers.to_provider("legacy", {"to": "t", "message_id": "m1", "data": {"a": "b"},
                                              "time_to_live": 60})
    assert isinstance(legacy, LegacyMessage) and legacy.id == "m1" and legacy.to == "t"
    c2dm = providers.to_provider("c2dm", {"to": "reg", "collapse_key": "k", "data": {"a": "b"}})
    assert isinstance(c2dm, C2dmMessage) and c2dm.registration_id == "reg"
    toast = providers.to_provider("mpns", {"to": "https://mpns.example/c", "toast": {
        "text1": "Hi", "text2": "there"}, "message_id": "m2"})
    assert isinstance(toast, MpnsMessage) and toast.notification == Toast("Hi", "there")
    assert toast.channel_uri == "https://mpns.example/c" and toast.id == "m2"
    raw = providers.to_provider("mpns", {"to": "https://mpns.example/c", "raw": "bytes!"})
    assert raw.notification == Raw(b"bytes!")
    cycle = providers.to_provider("mpns", {"to": "http://mpns.example/c",
                                           "cycle_tile": {"cycle_images": ["a"]}})
    assert cycle.notification == CycleTile(cycle_images=("a",))
    for bad, field in ((("mpns", {"to": "u"}), "notification"),
                       (("c2dm", {"to": "r", "collapse_key": "k", "colour": 1}), "colour"),
                       (("mpns", {"to": "u", "toast": {"text9": "x"}}), "text9")):
        with pytest.raises(ValueError) as exc:
            providers.to_provider(*bad)
        assert field in str(exc.value)


PATCHED = """
from gevent import monkey; monkey.patch_all()
import sys
from ccs.gateway.outbox.sqlite import SqliteStore
from ccs.gateway.settings import Settings
from ccs.gateway.supervisor import Supervisor
from tests.providers import LocalProvider
for threadpool in (False, True):
    s = Settings.defaults().replace(admin__port=0, admin__token="t" * 16)
    sup = Supervisor(s, store=SqliteStore(sys.argv[1] + str(threadpool), threadpool=threadpool),
                     providers={"ccs": LocalProvider("ccs")}).start()
    ids = sup.enqueue_many([{"to": f"t{i}"} for i in range(200)])
    assert all(sup.result(i).get(timeout=10).ok for i in ids)
    from ccs.gateway.admin.client import AdminClient
    assert AdminClient(sup.admin.port, "t" * 16).request("GET", "/v1/stats")["outbox"]["ok"] == 200
    sup.stop()
    sup.store.close()
print("patched ok")
"""


def test_works_under_monkey_patch_all(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT, ccs_env

    r = subprocess.run([sys.executable, "-c", PATCHED, str(tmp_path / "p.sqlite")],
                       env=ccs_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "patched ok" in r.stdout


def test_outcomes_survive_a_failing_store_write() -> None:
    class Flaky(MemoryStore):
        fail = 1

        def finish(self, done, now):  # type: ignore[no-untyped-def]
            if self.fail:
                self.fail -= 1
                raise OSError("disk full")
            super().finish(done, now)

    store = Flaky()
    sup = make({"ccs": LocalProvider("ccs")}, store=store)
    mid = sup.enqueue({"to": "t"})
    assert sup.result(mid).get(timeout=5).ok  # recorded on the finisher's restart
    assert sup.status(mid)["state"] == "ok"
    assert sup.health()["children"]["finisher"]["restarts"] == 1
    sup.stop()


def test_one_gateway_per_outbox_file(tmp_path: Path) -> None:
    from ccs.gateway.settings import ConfigError

    s = BASE.replace(outbox__path=str(tmp_path / "one.sqlite"))
    first = Supervisor(s, providers={"ccs": LocalProvider("ccs")}).start()
    with pytest.raises(ConfigError) as exc:
        Supervisor(s, providers={"ccs": LocalProvider("ccs")}).start()
    assert exc.value.key == "outbox.path" and "another" in str(exc.value)
    first.stop()
    again = Supervisor(s, providers={"ccs": LocalProvider("ccs")}).start()  # free again
    again.stop()
