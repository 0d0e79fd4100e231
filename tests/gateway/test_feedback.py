"""Token feedback: callbacks, the signed webhook (verified by a real loopback server), retries
from the store across a restart, and upstream/receipts stored before the ack."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from gevent.pywsgi import WSGIServer

from ccs.gateway.feedback import SIGNATURE_HEADER, Webhook, backoff, sign, verify
from ccs.gateway.outbox import MemoryStore
from ccs.gateway.outbox.sqlite import SqliteStore
from ccs.gateway.settings import ConfigError, Settings
from ccs.gateway.supervisor import Supervisor
from ccs.transport.tls import server_context
from tests.helpers import wait_until
from tests.providers import LocalProvider

SECRET = "webhook-secret-123"


class Receiver:
    """A loopback webhook receiver that fails the first `fail` requests with 500."""

    def __init__(self, fail: int = 0, tls: Any = None) -> None:
        self.fail = fail
        self.requests: list[tuple[dict[str, str], bytes]] = []
        extra = {"ssl_context": server_context(tls.cert_file, tls.key_file)} if tls else {}
        self.server = WSGIServer(("127.0.0.1", 0), self.app, log=None, **extra)
        self.server.start()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_port}/hook"

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        self.requests.append((headers, body))
        if len(self.requests) <= self.fail:
            start_response("500 Internal Server Error", [])
            return [b"no"]
        start_response("204 No Content", [])
        return []

    def accepted(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in self.requests[self.fail:]]


def settings(url: str, **kw: Any) -> Settings:
    return Settings.defaults().replace(admin__enabled=False, webhook__url=url,
                                       webhook__secret=SECRET, webhook__max_backoff=0.05, **kw)


def start(s: Settings, provider: LocalProvider, store: Any = None) -> Supervisor:
    sup = Supervisor(s, store=store or MemoryStore(), providers={"ccs": provider}).start()
    assert sup.feedback
    sup.feedback.poll = 0.01
    return sup


def test_signed_webhook_retried_until_accepted() -> None:
    rx = Receiver(fail=2)
    p = LocalProvider("ccs")
    p.fail_tokens["gone"] = "DEVICE_UNREGISTERED"
    sup = start(settings(rx.url), p)
    seen = []
    sup.token_events.add(seen.append)
    sup.result(sup.enqueue({"to": "gone"})).get(timeout=5)
    wait_until(lambda: len(rx.requests) == 3, what="two failures then success")
    for headers, body in rx.requests:
        assert verify(SECRET, body, headers[SIGNATURE_HEADER.lower()])
        assert SECRET.encode() not in body
        assert headers["content-type"] == "application/json"
    assert len({h["x-ccs-delivery"] for h, _ in rx.requests}) == 1  # one event, three tries
    (event,) = rx.accepted()
    assert event["kind"] == "unregistered" and event["token"] == "gone"
    assert event["provider"] == "ccs" and event["reason"] == "DEVICE_UNREGISTERED"
    assert len(seen) == 1
    wait_until(lambda: sup.store.event_counts() == {}, what="webhook event done")
    assert sup.stats()["webhook"] == {"posted": 1, "failures": 2}
    assert not verify(SECRET, b"tampered" + rx.requests[-1][1],
                      rx.requests[-1][0][SIGNATURE_HEADER.lower()])
    sup.stop()
    rx.server.stop()


def test_undelivered_webhook_survives_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "w.sqlite")
    down = Receiver(fail=10**6)  # always 500
    p = LocalProvider("ccs")
    p.fail_tokens["gone"] = "NotRegistered"
    sup = start(settings(down.url), p, SqliteStore(path))
    sup.result(sup.enqueue({"to": "gone"})).get(timeout=5)
    wait_until(lambda: len(down.requests) >= 2, what="failed posts")
    sup.stop()
    sup.store.close()
    down.server.stop()
    rx = Receiver()
    sup2 = start(settings(rx.url), LocalProvider("ccs"), SqliteStore(path))
    wait_until(lambda: rx.accepted(), what="stored event posted after restart")
    assert rx.accepted()[0]["token"] == "gone"
    wait_until(lambda: sup2.store.event_counts() == {}, what="done")
    sup2.stop()
    sup2.store.close()
    rx.server.stop()


def test_webhook_settings_checked() -> None:
    with pytest.raises(ConfigError) as exc:
        Webhook("http://127.0.0.1/x", "")
    assert exc.value.key == "webhook.secret"
    with pytest.raises(ConfigError) as exc:
        Webhook("ftp://x", "s")
    assert exc.value.key == "webhook.url"
    assert SECRET not in repr(Webhook("http://127.0.0.1/x", SECRET))
    assert sign("k", b"body") == sign("k", b"body") != sign("k2", b"body")


def test_backoff_doubles_with_jitter_and_cap() -> None:
    assert [backoff(n, 1.0, 10.0, rnd=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == \
        [1.0, 2.0, 4.0, 8.0, 10.0]
    assert backoff(3, 1.0, 10.0, rnd=lambda: 0.0) == 2.0


class CcsLike(LocalProvider):
    """The CcsClient handler contract: ack only after the handler returned."""

    def __init__(self) -> None:
        super().__init__("ccs")
        self.handlers: dict[str, Any] = {}
        self.acked: list[str] = []

    def on_upstream(self, fn: Any) -> None:
        self.handlers["upstream"] = fn

    def on_receipt(self, fn: Any) -> None:
        self.handlers["receipt"] = fn

    def deliver(self, kind: str, item: Any) -> None:
        self.handlers[kind](item)  # raises: no ack, CCS re-delivers
        self.acked.append(item.message_id)


def test_upstream_and_receipts_stored_before_ack_and_handled_once(tmp_path: Path) -> None:
    p = CcsLike()
    sup = start(Settings.defaults().replace(admin__enabled=False), p,
                SqliteStore(str(tmp_path / "u.sqlite")))
    got: list[Any] = []
    sup.upstream.add(got.append)
    sup.receipts.add(got.append)
    up = SimpleNamespace(sender="devtok", message_id="u1", category="com.app", data={"a": "1"},
                         raw={})
    p.deliver("upstream", up)
    # acked only after the handler returned, and by then it is committed to the file
    db = sqlite3.connect(tmp_path / "u.sqlite")
    assert p.acked == ["u1"]
    assert db.execute("SELECT count(*) FROM events WHERE kind = 'upstream'").fetchone() == (1,)
    db.close()
    p.deliver("upstream", up)  # CCS re-delivered it
    rc = SimpleNamespace(message_id="dr2:m1", original_message_id="m1",
                         status="MESSAGE_SENT_TO_DEVICE", device_token="devtok", raw={})
    p.deliver("receipt", rc)
    wait_until(lambda: len(got) == 2, what="upstream and receipt handled")
    assert got[0].kind == "upstream" and got[0].body["from"] == "devtok"
    assert got[1].kind == "receipt" and got[1].body["original_message_id"] == "m1"
    assert got[0].seq != got[1].seq
    assert sup.stats()["upstream_duplicates"] == 1
    sup.stop()
    sup.store.close()


def test_https_webhook_is_verified(pki: Any) -> None:
    rx = Receiver(tls=pki)
    p = LocalProvider("ccs")
    p.fail_tokens["gone"] = "NotRegistered"
    untrusted = start(settings(rx.url), p)  # no CA file: the test CA is not trusted
    untrusted.result(untrusted.enqueue({"to": "gone"})).get(timeout=5)
    wait_until(lambda: untrusted.feedback.post_failures >= 1, what="refused TLS")
    assert rx.requests == []
    untrusted.stop()
    trusted = start(settings(rx.url, webhook__ca_file=pki.ca_file), p)
    trusted.result(trusted.enqueue({"to": "gone"})).get(timeout=5)
    wait_until(lambda: rx.accepted(), what="delivered over verified TLS")
    assert verify(SECRET, rx.requests[0][1], rx.requests[0][0][SIGNATURE_HEADER.lower()])
    trusted.stop()
    rx.server.stop()


def test_records_stored_before_a_crash_reach_handlers_registered_before_start(
        tmp_path: Path) -> None:
    # A gateway stored an upstream message (and acked it to CCS), then died before handing
    # it to the app: the record is in the file, not yet done.
    path = str(tmp_path / "crash.sqlite")
    dead = SqliteStore(path)
    dead.add_event("upstream", "dev\x00u9", {"from": "dev", "message_id": "u9",
                                             "category": "c", "data": {"k": "v"}}, 1.0)
    dead.close()
    sup = Supervisor(Settings.defaults().replace(admin__enabled=False),
                     store=SqliteStore(path), providers={"ccs": LocalProvider("ccs")})
    got: list[Any] = []
    sup.upstream.add(got.append)  # before start(), as docs/gateway.rst says
    sup.start()
    try:
        wait_until(lambda: got, what="the stored record handed over")
        assert [(r.kind, r.body["message_id"]) for r in got] == [("upstream", "u9")]
    finally:
        sup.stop()
        sup.store.close()
