"""The admin API against a hostile local process: idle connections, many subscribers, slow
senders, odd methods, chunked and deeply nested bodies. The server keeps answering the client
that holds the token, and every bad request gets a clear answer, never a 500."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import gevent
import pytest
from gevent import socket
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ccs.gateway.admin.client import AdminClient, AdminError
from ccs.gateway.outbox import MemoryStore
from ccs.gateway.settings import ConfigError, Settings
from ccs.gateway.supervisor import Supervisor
from ccs.limits import MAX_DEPTH
from tests.gateway.admin.test_server import TOKEN, Drainable, in_thread
from tests.helpers import wait_until
from tests.providers import LocalProvider


def start(**changes: Any) -> Supervisor:
    s = Settings.defaults().replace(admin__port=0, admin__token=TOKEN, **changes)
    return Supervisor(s, store=MemoryStore(), providers={"ccs": Drainable()}).start()


@pytest.fixture
def sup() -> Any:
    sup = start()
    yield sup
    sup.stop()


def raw(port: int, data: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes as they are; the status and JSON body of the answer."""
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        conn.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            assert chunk, f"closed without an answer after {buf!r}"
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        length = int(next((h.split(b":")[1] for h in head.split(b"\r\n")
                           if h.lower().startswith(b"content-length:")), b"0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            assert chunk
            body += chunk
        return int(head.split()[1]), json.loads(body) if body else {}
    finally:
        conn.close()


def request(method: str, path: str, body: bytes, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}"
            f"Connection: close\r\n\r\n").encode() + body


def status_line(conn: socket.socket) -> int:
    buf = b""
    while b"\r\n" not in buf:
        chunk = conn.recv(1024)
        assert chunk, "closed without a status line"
        buf += chunk
    return int(buf.split()[1])


# -- 1: idle connections and subscribers never block requests ----------------------------------

def test_idle_connections_and_subscribers_leave_requests_served(sup: Supervisor) -> None:
    port = sup.admin.port
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(500)]
    subs = []
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
                  f"\r\n\r\n".encode())
        subs.append(s)
    try:
        statuses = [status_line(s) for s in subs]
        # the event pool is full at 64: the rest are refused at once, not queued
        assert statuses.count(200) == 64 and statuses.count(503) == 36
        client = AdminClient(port, TOKEN, timeout=1.0)  # a blocked request fails the test
        for i in range(5):
            began = time.monotonic()
            assert in_thread(client.request, "GET", "/v1/health")["ok"] is True
            assert time.monotonic() - began < 1.0
            began = time.monotonic()
            ids = in_thread(client.request, "POST", "/v1/messages",
                            {"message": {"to": f"t{i}"}})["ids"]
            assert time.monotonic() - began < 1.0 and sup.result(ids[0]).get(timeout=5).ok
        # subscribers that leave give their slots back at once, not at the next keepalive
        streaming = [s for s, code in zip(subs, statuses, strict=True) if code == 200]
        for s in streaming[:10]:
            s.close()
        wait_until(lambda: sup.admin.streams == 54, timeout=5, what="slots freed")
        again = socket.create_connection(("127.0.0.1", port))
        again.sendall(f"GET /v1/events HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                      .encode())
        assert status_line(again) == 200
        again.close()
    finally:
        for s in idle + subs:
            s.close()


def test_idle_and_slow_connections_are_closed() -> None:
    sup = start(admin__idle_timeout=0.3, admin__read_timeout=0.3)
    try:
        port = sup.admin.port
        silent = socket.create_connection(("127.0.0.1", port))
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # headers never finish
        body = socket.create_connection(("127.0.0.1", port))
        body.sendall(request("POST", "/v1/messages", b"")[:-4].replace(
            b"Content-Length: 0", b"Content-Length: 100") + b"\r\n\r\n{")
        with gevent.Timeout(10):
            assert silent.recv(100) == b""  # closed, nothing said
            while slow.recv(100):  # pywsgi may say 400 first; either way it closes
                pass
            assert status_line(body) == 408
        for s in (silent, slow, body):
            s.close()
    finally:
        sup.stop()


# -- 4: nothing raises out of a handler ---------------------------------------------------------

def test_deep_json_and_bad_drain_bodies_are_400(sup: Supervisor) -> None:
    port = sup.admin.port
    deep = b'{"message": {"to": "t", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    code, body = raw(port, request("POST", "/v1/messages", deep))
    assert code == 400 and "nested" in body["error"] and body["field"] == "body"
    one = {"to": "t", "data": {"k": "v"}}
    for _ in range(MAX_DEPTH):
        one = {"x": one}
    code, body = raw(port, request("POST", "/v1/messages",
                                   json.dumps({"messages": [one]}).encode()))
    assert code == 400 and "nested deeper" in body["error"]
    assert body["field"].startswith("messages[0]")
    for bad in (b"[1]", b'"x"', b"1", b'{"session_id": [1]}', b'{"session_id": true}'):
        code, body = raw(port, request("POST", "/v1/drain", bad))
        assert code == 400, bad
    assert sup.store.counts()["queued"] == 0


def test_a_full_outbox_is_503_with_the_reason(sup: Supervisor) -> None:
    def full(items: Any, now: float) -> Any:
        raise OSError(28, "No space left on device")

    sup.store.add = full  # type: ignore[method-assign]
    code, body = raw(sup.admin.port, request("POST", "/v1/messages", b'{"message":{"to":"t"}}'))
    assert code == 503 and "No space left on device" in body["error"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(depth=st.integers(0, 3000), opener=st.sampled_from([b"[", b"{\"a\":"]),
       encoding=st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1"]),
       text=st.text(max_size=20), junk=st.binary(max_size=20))
@example(depth=970, opener=b"[", encoding="utf-8", text="x", junk=b"")
@example(depth=0, opener=b"[", encoding="utf-8", text="\ud800", junk=b"")
@example(depth=1, opener=b"[", encoding="utf-8", text="x", junk=b"\xff\xfe")
def test_any_nesting_and_encoding_is_answered_never_500(sup: Supervisor, depth: int,
                                                        opener: bytes, encoding: str, text: str,
                                                        junk: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    value = opener * depth + b"1" + closer * depth
    try:
        title = json.dumps(text).encode(encoding, "surrogatepass")
    except UnicodeEncodeError:
        title = json.dumps(text).encode("utf-8", "surrogatepass")
    body = b'{"message": {"to": "t", "notification": {"title": ' + title + b'}, "data": {"v": ' \
        + value + b"}}}" + junk
    code, answer = raw(sup.admin.port, request("POST", "/v1/messages", body))
    assert code in (202, 400), answer
    if code == 400:
        assert answer["error"] and "field" in answer
    assert in_thread(AdminClient(sup.admin.port, TOKEN).request, "GET", "/v1/health")["ok"]


# -- 7: methods, chunked bodies, drain, idempotency, token ----------------------------------------

def test_wrong_method_is_405_with_allow(sup: Supervisor) -> None:
    for method, path, allow in (("GET", "/v1/messages", "POST"), ("DELETE", "/v1/stats", "GET"),
                                ("POST", "/v1/health", "GET"), ("PUT", "/v1/messages/x", "GET")):
        code, body = raw(sup.admin.port, request(method, path, b""))
        assert code == 405 and body["allow"] == allow, (method, path)
    code, _ = raw(sup.admin.port, request("GET", "/v1/nothing", b""))
    assert code == 404


def test_a_chunked_body_is_read(sup: Supervisor) -> None:
    body = json.dumps({"messages": [{"to": "c1"}, {"to": "c2"}]}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                      for i in range(0, len(body), 7)) + b"0\r\n\r\n"
    head = (f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    code, answer = raw(sup.admin.port, head + chunks)
    assert code == 202 and len(answer["ids"]) == 2
    assert all(sup.result(i).get(timeout=5).ok for i in answer["ids"])


def test_draining_an_unknown_session_is_404() -> None:
    from tests.gateway.admin.test_server import Drainable as Base

    class Sessions(Base):
        def drain(self, session_id: Any = None) -> int:
            self.drained.append(session_id)
            return 1 if session_id in (None, 1) else 0

        def stats(self) -> dict[str, Any]:
            return {"sessions": [{"id": 1, "state": "ready"}]}

    s = Settings.defaults().replace(admin__port=0, admin__token=TOKEN)
    sup = Supervisor(s, store=MemoryStore(), providers={"ccs": Sessions()}).start()
    try:
        client = AdminClient(sup.admin.port, TOKEN)
        assert in_thread(client.request, "POST", "/v1/drain", {"session_id": "1"}) == \
            {"drained": 1}
        for sid in ("7", "x"):
            with pytest.raises(AdminError) as exc:
                in_thread(client.request, "POST", "/v1/drain", {"session_id": sid})
            assert exc.value.status == 404 and sid in str(exc.value)
    finally:
        sup.stop()


def test_message_id_is_idempotent(sup: Supervisor) -> None:
    port = sup.admin.port
    msg = {"message": {"to": "t", "message_id": "order-17", "data": {"a": "1"}}}
    code, first = raw(port, request("POST", "/v1/messages", json.dumps(msg).encode()))
    assert code == 202 and first["ids"] == ["order-17"]
    code, again = raw(port, request("POST", "/v1/messages", json.dumps(msg).encode()))
    assert code == 200 and again["ids"] == ["order-17"]
    msg["message"]["data"] = {"a": "2"}
    code, other = raw(port, request("POST", "/v1/messages", json.dumps(msg).encode()))
    assert code == 409 and other["field"] == "messages[0].message_id"
    assert sup.status("order-17") is not None
    assert sup.store.counts()["queued"] + sup.store.counts()["ok"] == 1


def test_a_short_admin_token_is_refused() -> None:
    s = Settings.defaults().replace(admin__port=0, admin__token="x" * 15)
    with pytest.raises(ConfigError) as exc:
        Supervisor(s, store=MemoryStore(), providers={"ccs": LocalProvider("ccs")}).start()
    assert exc.value.key == "admin.token" and "16" in str(exc.value)


def test_http_client_chunked_post(sup: Supervisor) -> None:
    """The standard library's chunked upload (an iterable body) is read too."""
    def post() -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", sup.admin.port, timeout=10)
        conn.request("POST", "/v1/messages", body=iter([b'{"message":', b'{"to":"z"}}']),
                     headers={"Authorization": f"Bearer {TOKEN}"}, encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())

    code, body = in_thread(post)
    assert code == 202 and len(body["ids"]) == 1
