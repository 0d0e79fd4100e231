"""The FCM v1 and legacy clients facing a hostile HTTPS server on loopback: oversized, truncated
and mis-framed answers, non-JSON and wrongly shaped JSON. Each becomes an outcome with a reason
or a retry; none an exception or a hang."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
from gevent.server import StreamServer

from ccs.outcome import Status
from ccs.transport.http11 import DEFAULT_MAX_RESPONSE_BYTES
from ccs.transport.tls import server_context
from http_fallback.fcm import FcmClient, FcmConfig
from http_fallback.fcm.emulator import FcmEmulator
from http_fallback.legacy.client import LegacyClient, LegacyConfig
from http_fallback.legacy.model import LegacyMessage
from http_fallback.retry_policy import Backoff
from tests.greenlet_errors import no_greenlet_errors  # noqa: F401 - autouse fixture

CAP = DEFAULT_MAX_RESPONSE_BYTES
FCM_OK = b'{"name":"projects/proj-h/messages/1"}'
LEGACY_OK = b'{"multicast_id":1,"success":1,"failure":0,"canonical_ids":0,' \
            b'"results":[{"message_id":"0:1"}]}'


def answer(status: str, headers: list[str], body: bytes = b"") -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *headers]) + "\r\n\r\n").encode() + body


def chunks_forever(sock) -> None:
    """A chunked body that never ends before the client's cap: 1 MiB chunks."""
    sock.sendall(answer("200 OK", ["Transfer-Encoding: chunked"]))
    piece = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
    for _ in range(CAP // 0x100000 + 2):
        sock.sendall(piece)


Script = Callable[[object], None]
ATTACKS: dict[str, Script] = {
    "huge-content-length": lambda s: s.sendall(answer("200 OK", [f"Content-Length: {CAP + 1}"])),
    "huge-chunked-body": chunks_forever,
    "truncated-chunked": lambda s: s.sendall(
        answer("200 OK", ["Transfer-Encoding: chunked"], b"20\r\n{\"name\":")),
    "content-length-too-long": lambda s: s.sendall(
        answer("200 OK", ["Content-Length: 500"], FCM_OK)),
    "garbage-status-line": lambda s: s.sendall(b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n"),
    "bad-chunk-size": lambda s: s.sendall(
        answer("200 OK", ["Transfer-Encoding: chunked"], b"-5\r\nhello\r\n0\r\n\r\n")),
}
# answers that are complete HTTP but not what the service sends: an outcome, not a retry
WRONG_SHAPE = {
    "non-json-200": (answer("200 OK", ["Content-Length: 15"], b"<html>hi</html>"),
                     Status.UNKNOWN),
    "array-200": (answer("200 OK", ["Content-Length: 2"], b"[]"), Status.UNKNOWN),
    "content-length-too-short": (answer("200 OK", ["Content-Length: 5"], FCM_OK),
                                 Status.UNKNOWN),
    "deep-json-200": (answer("200 OK", ["Content-Length: 60000"], b"[" * 60000),
                      Status.UNKNOWN),
}


class HostileHttp:
    """HTTPS on loopback: the first `bad` requests get `script`, later ones `good`."""

    def __init__(self, pki, script: Script, good: bytes, bad: int = 1) -> None:
        self.script, self.good, self.bad = script, good, bad
        self.requests = 0
        self.server = StreamServer(("127.0.0.1", 0), self._handle,
                                   ssl_context=server_context(pki.cert_file, pki.key_file))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> HostileHttp:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(timeout=1)

    def _handle(self, sock, _addr) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buf) < length:
                    buf += sock.recv(65536)
                buf = buf[length:]
                self.requests += 1
                if self.requests <= self.bad:
                    self.script(sock)
                    return  # and close
                sock.sendall(answer("200 OK", [f"Content-Length: {len(self.good)}"], self.good))
        except OSError:
            pass
        finally:
            sock.close()


@pytest.fixture(scope="module")
def oauth(pki):
    with FcmEmulator(pki, "proj-h") as emu:
        yield emu


def fcm_client(oauth, pki, url: str) -> FcmClient:
    config = FcmConfig(oauth.credentials_file, base_url=url, ca_file=pki.ca_file, timeout=3,
                       retry_base_delay=0.01, retry_jitter=0.0, max_attempts=3)
    return FcmClient(config)


def legacy_client(pki, url: str) -> LegacyClient:
    return LegacyClient(LegacyConfig(server_key="legacy-hostile-key", url=url + "/fcm/send",
                                     ca_file=pki.ca_file, timeout=3,
                                     backoff=Backoff(initial=0.01, maximum=0.05, attempts=3)))


def send_fcm(client: FcmClient):
    client.start()
    try:
        return client.send({"token": "tok-1", "data": {"k": "v"}}).get(timeout=20)
    finally:
        client.stop(timeout=2)


def send_legacy(client: LegacyClient):
    client.start()
    try:
        return client.send(LegacyMessage(to="tok-1", data={"k": "v"})).get(timeout=20)
    finally:
        client.stop(timeout=2)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_fcm_retries_after_a_broken_answer(oauth, pki, name):
    with HostileHttp(pki, ATTACKS[name], FCM_OK) as server:
        outcome = send_fcm(fcm_client(oauth, pki, server.url))
    assert outcome.status is Status.OK and outcome.attempts == 2, outcome
    assert server.requests == 2


@pytest.mark.parametrize("name", list(ATTACKS))
def test_legacy_retries_after_a_broken_answer(pki, name):
    with HostileHttp(pki, ATTACKS[name], LEGACY_OK) as server:
        outcome = send_legacy(legacy_client(pki, server.url))
    assert outcome.status is Status.OK and outcome.attempts == 2, outcome
    assert server.requests == 2


@pytest.mark.parametrize("name", list(WRONG_SHAPE))
def test_fcm_wrong_shape_is_an_outcome_with_a_reason(oauth, pki, caplog, name):
    raw, status = WRONG_SHAPE[name]
    caplog.set_level(logging.WARNING)
    with HostileHttp(pki, lambda s: s.sendall(raw), FCM_OK) as server:
        outcome = send_fcm(fcm_client(oauth, pki, server.url))
    assert outcome.status is status and outcome.error == "BAD_RESPONSE", outcome
    assert outcome.description and server.requests == 1
    assert any("without a message name" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", list(WRONG_SHAPE))
def test_legacy_wrong_shape_is_an_outcome_with_a_reason(pki, name):
    raw, status = WRONG_SHAPE[name]
    with HostileHttp(pki, lambda s: s.sendall(raw), LEGACY_OK) as server:
        outcome = send_legacy(legacy_client(pki, server.url))
    assert outcome.status is status and outcome.error == "UnexpectedAnswer", outcome
    assert outcome.description


@pytest.mark.parametrize("body", [b'{"error":5}', b'{"error":{"details":7,"status":[1]}}',
                                  b"[" * 60000, b"\xff\xfe"])
def test_fcm_error_body_of_the_wrong_shape_falls_back_on_the_status(oauth, pki, body):
    raw = answer("400 Bad Request", [f"Content-Length: {len(body)}"], body)
    with HostileHttp(pki, lambda s: s.sendall(raw), FCM_OK) as server:
        outcome = send_fcm(fcm_client(oauth, pki, server.url))
    assert outcome.status is Status.FAILED and outcome.error == "INVALID_ARGUMENT"


@pytest.mark.parametrize("body", [b'{"success":"a","failure":1,"failed_registration_ids":5}',
                                  b'{"results":[1,2]}', b'{"results":"x"}',
                                  json.dumps({"results": [{"message_id": None}]}).encode()])
def test_legacy_results_of_the_wrong_shape(pki, body):
    raw = answer("200 OK", [f"Content-Length: {len(body)}"], body)
    with HostileHttp(pki, lambda s: s.sendall(raw), LEGACY_OK) as server:
        outcome = send_legacy(legacy_client(pki, server.url))
    assert outcome.status in (Status.UNKNOWN, Status.FAILED) and outcome.error, outcome


def test_legacy_multicast_given_a_single_answer_resolves_every_id(pki):
    body = b'{"message_id":"0:1"}'
    raw = answer("200 OK", [f"Content-Length: {len(body)}"], body)
    with HostileHttp(pki, lambda s: s.sendall(raw), LEGACY_OK) as server:
        client = legacy_client(pki, server.url)
        client.start()
        try:
            results = client.send_multicast(LegacyMessage(registration_ids=["a", "b", "c"]))
            outcomes = [r.get(timeout=10) for r in results]
        finally:
            client.stop(timeout=2)
    assert [o.status for o in outcomes] == [Status.UNKNOWN] * 3
    assert {o.error for o in outcomes} == {"UnexpectedAnswer"}
