"""The APNs client facing a hostile HTTP/2 server (TLS, ALPN h2, loopback): garbage frames, a
huge header block, DATA past the frame size or the reply cap, GOAWAY with bad debug data.
Every notification ends in one outcome; no greenlet dies, nothing hangs."""

from __future__ import annotations

import itertools
import struct
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from gevent.server import StreamServer
from h2 import events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection
from hpack import Encoder

from ccs.outcome import Status
from ccs.transport.tls import server_context
from http_fallback.apns.auth import certificate_context
from http_fallback.apns.binary.client import BinaryClient
from http_fallback.apns.binary.feedback import Feedback
from http_fallback.apns.client import ApnsClient
from http_fallback.apns.config import ApnsConfig
from http_fallback.apns.model import Notification
from tests.apns_support import KEY_ID, KEY_PEM, TEAM_ID, TOPIC, token
from tests.greenlet_errors import no_greenlet_errors  # noqa: F401 - autouse fixture

Attack = Callable[[H2Connection, Any, int], None]


def frame(kind: int, flags: int, stream_id: int, payload: bytes, length: int | None = None
          ) -> bytes:
    size = len(payload) if length is None else length
    return struct.pack(">I", size)[1:] + struct.pack(">BBI", kind, flags, stream_id) + payload


def huge_header_block(h2: H2Connection, sock: Any, sid: int) -> None:
    block = Encoder().encode([(":status", "200"), ("x-big", "a" * 300_000)], huffman=False)
    pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    out = frame(1, 0, sid, pieces[0])  # HEADERS without END_HEADERS
    out += b"".join(frame(9, 0x4 if i == len(pieces) - 1 else 0, sid, p)
                    for i, p in enumerate(pieces[1:], 1))
    sock.sendall(out)


def endless_body(h2: H2Connection, sock: Any, sid: int) -> None:
    """A 410 whose body is 4 MiB, within flow control (the client acks as it reads)."""
    h2.send_headers(sid, [(":status", "410")])
    sock.sendall(h2.data_to_send())
    left = 4 * 1024 * 1024
    while left:
        window = h2.local_flow_control_window(sid)
        if not window:
            data = sock.recv(65536)
            if not data:
                return
            h2.receive_data(data)
            continue
        size = min(window, 16384, left)
        h2.send_data(sid, b"x" * size)
        sock.sendall(h2.data_to_send())
        left -= size
    h2.end_stream(sid)
    sock.sendall(h2.data_to_send())


def goaway(debug: bytes) -> Attack:
    def attack(h2: H2Connection, sock: Any, sid: int) -> None:
        h2.close_connection(error_code=0, additional_data=debug, last_stream_id=0)
        sock.sendall(h2.data_to_send())
    return attack


def status(value: bytes) -> Attack:
    def attack(h2: H2Connection, sock: Any, sid: int) -> None:
        block = Encoder().encode([(b":status", value)])
        sock.sendall(frame(1, 0x4 | 0x1, sid, block))
    return attack


# name -> (attack, what may come of the notification)
CLOSING = {
    "garbage-bytes": (lambda h2, s, sid: s.sendall(b"\xde\xad\xbe\xef" * 64), Status.UNKNOWN),
    "ping-of-wrong-length": (lambda h2, s, sid: s.sendall(frame(6, 0, 0, b"abc")),
                             Status.UNKNOWN),
    "data-frame-over-max-size": (lambda h2, s, sid: s.sendall(
        frame(0, 0, sid, b"x" * 20000)), Status.UNKNOWN),
    "data-on-stream-0": (lambda h2, s, sid: s.sendall(frame(0, 1, 0, b"x")), Status.UNKNOWN),
    "data-on-an-idle-stream": (lambda h2, s, sid: s.sendall(frame(0, 1, sid + 98, b"x")),
                               Status.UNKNOWN),
    "window-update-overflow": (lambda h2, s, sid: s.sendall(
        frame(8, 0, 0, struct.pack(">I", 0x7FFFFFFF))), Status.UNKNOWN),
    "huge-header-block": (huge_header_block, Status.UNKNOWN),
    "goaway-over-max-frame-size": (goaway(b"[" * 50000), Status.UNKNOWN),
}
RETRIED = {
    "goaway-not-json": goaway(b"\xff\xfe{not json"),
    "goaway-deep-json": goaway(b"[" * 16000),
    "goaway-reason-object": goaway(b'{"reason":{"a":1}}'),
    "goaway-long-reason": goaway(b'{"reason":"' + b"R" * 16000 + b'"}'),
}


class HostileH2:
    """The first `bad` connections run `attack` on their first request; later ones answer 200."""

    def __init__(self, pki: Any, attack: Attack, bad: int = 1) -> None:
        self.attack, self.bad = attack, bad
        self.connections = 0
        self.requests = 0
        self._numbers = itertools.count(1)
        ctx = server_context(pki.cert_file, pki.key_file, alpn=["h2"])
        self.server = StreamServer(("127.0.0.1", 0), self._handle, ssl_context=ctx)

    def __enter__(self) -> HostileH2:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(timeout=1)

    def _handle(self, sock: Any, _addr: Any) -> None:
        hostile = next(self._numbers) <= self.bad
        self.connections += 1
        h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        h2.initiate_connection()
        try:
            sock.sendall(h2.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for e in h2.receive_data(data):
                    if isinstance(e, ev.StreamEnded):
                        self.requests += 1
                        if hostile:  # once; the connection may live on if the client lets it
                            hostile = False
                            sock.sendall(h2.data_to_send())
                            self.attack(h2, sock, e.stream_id)
                            continue
                        h2.send_headers(e.stream_id, [(":status", "200"),
                                                      ("apns-id", str(uuid.uuid4()))],
                                        end_stream=True)
                sock.sendall(h2.data_to_send())
        except Exception:  # noqa: BLE001 - the client may hang up mid-attack
            pass
        finally:
            sock.close()


def send_one(server: HostileH2, pki: Any, **kw: Any):
    options = dict(host="127.0.0.1", port=server.server.server_port, ca_file=pki.ca_file,
                   topic=TOPIC, connections=1, request_timeout=5.0, backoff_base=0.01,
                   reconnect_base=0.01, key_data=KEY_PEM, key_id=KEY_ID, team_id=TEAM_ID)
    options.update(kw)
    with ApnsClient(ApnsConfig(**options)) as client:
        return client.send(Notification(device=token(7), alert="hi")).get(timeout=10)


@pytest.mark.parametrize("name", list(CLOSING))
def test_protocol_attack_closes_the_connection_and_the_notification_is_unknown(pki, name):
    attack, expected = CLOSING[name]
    with HostileH2(pki, attack) as server:
        outcome = send_one(server, pki)
    assert outcome.status is expected, outcome
    # the close reason, at once: not the 5 s request deadline running out
    assert outcome.error and outcome.error != "Timeout", outcome
    assert server.requests == 1  # sent once: no duplicate after an unknown end


@pytest.mark.parametrize("name", list(RETRIED))
def test_goaway_with_bad_debug_data_retries_on_a_new_connection(pki, name):
    with HostileH2(pki, RETRIED[name]) as server:
        outcome = send_one(server, pki)
    assert outcome.status is Status.OK and server.connections == 2, outcome


@pytest.mark.parametrize("value", [b"abc", b"", b"20", b"\xb2\xb2\xb2", b"99999"])
def test_a_status_that_is_not_three_digits_is_an_outcome(pki, value):
    with HostileH2(pki, status(value)) as server:
        outcome = send_one(server, pki)
    assert outcome.status in (Status.OK, Status.UNKNOWN, Status.FAILED), outcome
    assert outcome.status is Status.OK or outcome.error


def headers(*fields: tuple[bytes, bytes]) -> Attack:
    def attack(h2: H2Connection, sock: Any, sid: int) -> None:
        sock.sendall(frame(1, 0x4 | 0x1, sid, Encoder().encode(list(fields))))
    return attack


@pytest.mark.parametrize("fields", [
    [(b"apns-id", b"x")],  # no :status
    [(b":status", b"20x")],
    [(b":status", b"200"), (b":status", b"200")],
    [(b":status", b"200"), (b":status", b"500")],
    [(b":status", b"\xff\xfe\x00")],
])
def test_an_answer_without_one_valid_status_is_failed_not_lost(pki, fields):
    # h2's inbound header checks are off (h2conn.client_config): the client itself must not
    # read such an answer as 200, nor drop the connection and the other streams over it
    with HostileH2(pki, headers(*fields)) as server:
        outcome = send_one(server, pki, retries=0)
    assert (outcome.status, outcome.error) == (Status.FAILED, "HTTP0"), outcome
    assert server.requests == 1 and server.connections == 1


def test_an_endless_reply_body_is_capped_in_memory(pki):
    tracemalloc.start()
    try:
        with HostileH2(pki, endless_body) as server:
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            outcome = send_one(server, pki)
            peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert outcome.status is Status.FAILED and outcome.error == "HTTP410", outcome
    assert peak < 2 * 1024 * 1024, peak  # 4 MiB went by


# -- the binary interface and its feedback service ---------------------------------------------

class RawTls:
    """A TLS server that reads (for `wait` bytes) and then writes `answer` and closes."""

    def __init__(self, pki: Any, answer: bytes, wait: int = 1) -> None:
        self.answer, self.wait = answer, wait
        ctx = server_context(pki.cert_file, pki.key_file, client_ca_file=pki.ca_file)
        self.server = StreamServer(("127.0.0.1", 0), self._handle, ssl_context=ctx)

    def __enter__(self) -> RawTls:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(timeout=1)

    def _handle(self, sock: Any, _addr: Any) -> None:
        try:
            got = b""
            while len(got) < self.wait:
                data = sock.recv(65536)
                if not data:
                    return
                got += data
            sock.sendall(self.answer)
        except OSError:
            pass
        finally:
            sock.close()


def binary_context(pki: Any) -> Any:
    return certificate_context(ca_file=pki.ca_file, cert_file=pki.client_cert_file,
                               key_file=pki.client_key_file)


@pytest.mark.parametrize("answer", [b"\x09\x08\x00\x00\x00\x01", b"HTTP/1.1 400 Bad\r\n\r\n"])
def test_binary_gateway_answer_that_is_not_an_error_response(pki, caplog, answer):
    reasons: list[str] = []
    with RawTls(pki, answer) as gateway:
        client = BinaryClient("127.0.0.1", gateway.server.server_port, binary_context(pki),
                              quiet_period=0.2, reconnect_base=0.01)
        client.disconnected.add(reasons.append)
        client.start()
        try:
            outcome = client.send(Notification(device=token(3), alert="hi")).get(10)
        finally:
            client.stop()
    assert outcome.status in (Status.OK, Status.UNKNOWN)  # never confirmed, never lost
    assert any("unreadable answer from gateway" in r for r in reasons), reasons
    assert any("unreadable answer" in r.getMessage() for r in caplog.records)


def test_feedback_tuple_with_a_bad_token_length_is_an_error_not_a_token(pki):
    bad = struct.pack(">IH", 1_600_000_000, 0xFFFF) + b"a" * 32 + b"b" * 38
    with RawTls(pki, bad, wait=0) as service:
        fb = Feedback("127.0.0.1", service.server.server_port, binary_context(pki), interval=0)
        assert fb.poll() == []
    assert "token length" in fb.last_error
