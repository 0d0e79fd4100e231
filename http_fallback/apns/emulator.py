"""ApnsEmulator: a real HTTP/2 TLS server (ALPN h2) that answers like the APNs provider API.

Checks requests (emulator_rules), provider tokens (ES256 signature, kid, team, age, rotation per
connection) or the TLS client certificate, and plays scripted outcomes per device token. Stream
limits move like APNs': 1 until a token-auth connection posts a valid request, 1 after a
rejection, back up after an acceptance. GOAWAY, REFUSED_STREAM, held replies and dropped
connections happen on demand, so clients' recovery paths can be tested. `seen` records requests.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
import jwt
from gevent import socket, ssl
from gevent.event import Event
from gevent.lock import Semaphore
from gevent.pool import Group
from gevent.server import StreamServer
from h2 import events as ev
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from hpack import NeverIndexedHeaderTuple

from ccs.testing.pki import TestPKI
from ccs.transport.h2conn import FastH2Connection
from ccs.transport.tls import server_context
from http_fallback.apns.emulator_rules import STATUS_OF, check_request, malformed


@dataclass
class Scripted:
    reason: str | None = None  # None: accept
    status: int | None = None
    timestamp_ms: int | None = None


@dataclass
class Seen:
    connection: int
    stream_id: int
    token: str | None
    topic: str | None
    headers: dict[str, str]
    payload: Any
    status: int
    reason: str | None
    never_indexed: frozenset[str] = frozenset()  # names sent as never-indexed literals
    at: float = field(default_factory=time.time)


class _Conn:
    def __init__(self, number: int, sock: Any, h2: FastH2Connection) -> None:
        self.number = number
        self.sock = sock
        self.h2 = h2
        self.lock = Semaphore()
        self.requests: dict[int, list[Any]] = {}
        self.token: bytes | None = None
        self.token_set_at = 0.0
        self.claims: dict[str, Any] | None = None
        self.token_ok = False
        self.limit = 0
        self.held: list[tuple[int, int, bytes, bytes]] = []
        self.stalled: list[tuple[int, list[Any], bytes]] = []  # requests not yet processed
        self.pings = 0


class ApnsEmulator:
    """Use as a context manager; `port`, `ca_file` and `seen` describe it once started."""

    def __init__(self, pki: TestPKI, keys: dict[str, Any] | None = None,
                 team_id: str | None = None, topics: tuple[str, ...] | None = None,
                 host: str = "127.0.0.1", port: int = 0, cert_auth: bool = False,
                 max_concurrent_streams: int = 1000, drop_to_one: bool = True,
                 token_max_age: float = 3600, token_min_interval: float = 20 * 60,
                 response_delay: float = 0.0, record: int | None = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.pki = pki
        self.keys = dict(keys or {})
        self.team_id = team_id
        self.topics = frozenset(topics) if topics else None
        self.host = host
        self.port = port
        self.cert_auth = cert_auth
        self.max_streams = max_concurrent_streams
        self.drop_to_one = drop_to_one
        self.token_max_age = token_max_age
        self.token_min_interval = token_min_interval
        self.response_delay = response_delay
        self.clock = clock
        self.seen: deque[Seen] = deque(maxlen=record) if record else deque(maxlen=0)
        self.scripts: dict[str, deque[Scripted]] = {}
        self.refuse = 0
        self.drop = 0
        self.holding = False
        self.stalling = False
        self.accepted = self.rejected = self.refused = 0
        self.malformed = 0  # requests reset with PROTOCOL_ERROR (RFC 9113 8.1.1)
        self.connect_times: list[float] = []
        self.tokens_by_conn: dict[int, list[bytes]] = {}
        self.max_active = 0
        self.handshake_failures = 0
        self._conns: dict[int, _Conn] = {}
        self._thaw = Event()
        self._thaw.set()
        self._count = 0
        self._group = Group()
        self._server: StreamServer | None = None

    # -- control ---------------------------------------------------------------------------
    @property
    def ca_file(self) -> str:
        return self.pki.ca_file

    def start(self) -> ApnsEmulator:
        ctx = server_context(self.pki.cert_file, self.pki.key_file, alpn=["h2"],
                             client_ca_file=self.pki.ca_file if self.cert_auth else None)
        if self.cert_auth:
            ctx.verify_mode = ssl.CERT_REQUIRED
        self._ctx = ctx
        self._server = StreamServer((self.host, self.port), self._handle)
        self._server.start()
        self.port = self._server.server_port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._group.kill(timeout=1)

    def __enter__(self) -> ApnsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, token: str, *outcomes: Scripted) -> None:
        self.scripts.setdefault(token.lower(), deque()).extend(outcomes)

    def reject(self, token: str, reason: str, times: int = 1,
               timestamp_ms: int | None = None) -> None:
        """The next `times` requests to `token` get `reason` (its documented HTTP status)."""
        self.script(token, *[Scripted(reason, STATUS_OF.get(reason, 400), timestamp_ms)] * times)

    def refuse_next(self, n: int = 1) -> None:
        """Reset the next n streams with REFUSED_STREAM, unprocessed."""
        self.refuse += n

    def drop_next_connections(self, n: int = 1) -> None:
        """Close the next n TCP connections before the TLS handshake."""
        self.drop += n

    def hold(self) -> None:
        """Keep replies back until release() (streams stay open)."""
        self.holding = True

    def freeze(self) -> None:
        """Stop reading from every connection (no replies, no PING acks) until thaw()."""
        self._thaw.clear()

    def thaw(self) -> None:
        self._thaw.set()

    def stall(self) -> None:
        """Leave requests unprocessed (streams open, nothing recorded) until release(); a
        GOAWAY meanwhile drops them, truthfully unprocessed."""
        self.stalling = True

    def held_streams(self) -> list[tuple[int, int]]:
        """(connection, stream) of every held answer and stalled request."""
        return sorted([(c.number, h[0]) for c in self._conns.values() for h in c.held]
                      + [(c.number, r[0]) for c in self._conns.values() for r in c.stalled])

    def release(self) -> None:
        self.holding = self.stalling = False
        for conn in list(self._conns.values()):
            stalled, conn.stalled = conn.stalled, []
            with conn.lock:
                answers = [self._answer(conn, *r) for r in stalled]
            held, conn.held = conn.held + answers, []
            self._send(conn, held)

    def set_stream_limit(self, limit: int) -> None:
        """Announce SETTINGS_MAX_CONCURRENT_STREAMS=limit on every connection now; streams in
        flight stay open (the next answer may move the limit again, as APNs does)."""
        for conn in list(self._conns.values()):
            with conn.lock:
                try:
                    conn.limit = limit
                    conn.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: limit})
                    conn.sock.sendall(conn.h2.data_to_send())
                except (OSError, ProtocolError):
                    pass

    def goaway(self, reason: str = "Shutdown", last_stream_id: int | None = None) -> None:
        """GOAWAY on every connection (debug data {"reason": ...}), then close it."""
        for conn in list(self._conns.values()):
            last = conn.h2.highest_inbound_stream_id if last_stream_id is None else last_stream_id
            debug = json.dumps({"reason": reason}).encode()
            with conn.lock:
                try:
                    conn.h2.close_connection(ErrorCodes.NO_ERROR, debug, last_stream_id=last)
                    conn.sock.sendall(conn.h2.data_to_send())
                except (OSError, ProtocolError):
                    pass
            conn.held = []
            conn.stalled = []
            conn.sock.close()

    def connections(self) -> int:
        return len(self._conns)

    def pings(self) -> int:
        return sum(c.pings for c in self._conns.values()) + self._closed_pings

    _closed_pings = 0

    # -- per connection ------------------------------------------------------------------
    def _handle(self, raw: Any, address: Any) -> None:
        self.connect_times.append(time.monotonic())
        if self.drop:
            self.drop -= 1
            raw.close()
            return
        try:
            # answers are small frames: without NODELAY, Nagle holds one back until the
            # client's delayed ACK (~40 ms on Linux), which then paces the whole connection
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self._ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            self.handshake_failures += 1
            raw.close()
            return
        self._count += 1
        number = self._count
        # Inbound header blocks are checked by emulator_rules.malformed, not by h2.
        h2 = FastH2Connection(H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False,
            validate_inbound_headers=False, normalize_inbound_headers=False), huffman=False)
        limit = 1 if not self.cert_auth else self.max_streams
        h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: limit})
        conn = _Conn(number, sock, h2)
        conn.limit = limit
        self._conns[number] = conn
        try:
            with conn.lock:
                h2.initiate_connection()
                sock.sendall(h2.data_to_send())
            while True:
                self._thaw.wait()
                data = sock.recv(65536)
                if not data:
                    return
                with conn.lock:
                    try:
                        events = h2.receive_data(data)
                    except ProtocolError:
                        sock.sendall(h2.data_to_send())  # h2 queued its GOAWAY
                        return
                    replies = self._on_events(conn, events)
                    out = h2.data_to_send()
                    if out:
                        sock.sendall(out)
                if replies:
                    self._dispatch(conn, replies)
        except (OSError, ssl.SSLError):
            return
        finally:
            self._closed_pings += conn.pings
            self._conns.pop(number, None)
            sock.close()

    def _on_events(self, conn: _Conn, events: list[Any]) -> list[tuple[int, int, bytes, bytes]]:
        replies = []
        h2 = conn.h2
        for e in events:
            t = type(e)
            if t is ev.RequestReceived:
                if malformed(e.headers) is not None:
                    self.malformed += 1
                    h2.reset_stream(e.stream_id, ErrorCodes.PROTOCOL_ERROR)
                    continue
                conn.requests[e.stream_id] = [e.headers, b""]
                active = len(conn.requests)
                if active > self.max_active:
                    self.max_active = active
            elif t is ev.DataReceived:
                h2.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                req = conn.requests.get(e.stream_id)
                if req is not None:
                    req[1] += e.data
            elif t is ev.StreamEnded:
                req = conn.requests.pop(e.stream_id, None)
                if req is None:
                    continue
                if self.stalling:
                    conn.stalled.append((e.stream_id, req[0], req[1]))
                    continue
                if self.refuse:
                    self.refuse -= 1
                    self.refused += 1
                    h2.reset_stream(e.stream_id, ErrorCodes.REFUSED_STREAM)
                    continue
                replies.append(self._answer(conn, e.stream_id, req[0], req[1]))
            elif t is ev.StreamReset:
                conn.requests.pop(e.stream_id, None)
            elif t is ev.PingReceived:
                conn.pings += 1
        return replies

    def _dispatch(self, conn: _Conn, replies: list[tuple[int, int, bytes, bytes]]) -> None:
        if self.holding:
            conn.held.extend(replies)
        elif self.response_delay:
            self._group.spawn(self._later, conn, replies)
        else:
            self._send(conn, replies)

    def _later(self, conn: _Conn, replies: list[tuple[int, int, bytes, bytes]]) -> None:
        gevent.sleep(self.response_delay)
        self._send(conn, replies)

    def _send(self, conn: _Conn, replies: list[tuple[int, int, bytes, bytes]]) -> None:
        h2 = conn.h2
        if not replies:
            return
        with conn.lock:
            try:
                for sid, status, apns_id, body in replies:
                    headers = [(b":status", str(status).encode()), (b"apns-id", apns_id)]
                    if body:
                        headers.append((b"content-type", b"application/json"))
                        h2.send_headers(sid, headers)
                        h2.send_data(sid, body, end_stream=True)
                    else:
                        h2.send_headers(sid, headers, end_stream=True)
                self._adjust_limit(conn, replies)
                conn.sock.sendall(h2.data_to_send())
            except (OSError, ProtocolError):
                conn.sock.close()

    def _adjust_limit(self, conn: _Conn, replies: list[tuple[int, int, bytes, bytes]]) -> None:
        last_ok = replies[-1][1] == 200
        want = conn.limit
        if not last_ok and self.drop_to_one:
            want = 1
        elif last_ok and (conn.token_ok or self.cert_auth):
            want = self.max_streams
        if want != conn.limit:
            conn.limit = want
            conn.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: want})

    def _answer(self, conn: _Conn, sid: int, headers: list[tuple[bytes, bytes]],
                body: bytes) -> tuple[int, int, bytes, bytes]:
        hmap = dict(headers)
        apns_id = hmap.get(b"apns-id") or str(uuid.uuid4()).encode()
        reason, topic, token = check_request(headers, body, self.topics,
                                             topic_required=not self.cert_auth)
        if reason is None and not self.cert_auth:
            reason = self._check_jwt(conn, hmap.get(b"authorization"))
        status, ts = 200, None
        tok = token.decode().lower() if token else None
        if reason is None and tok in self.scripts:
            queue = self.scripts[tok]
            if queue:
                s = queue.popleft()
                if s.reason is not None:
                    reason, ts = s.reason, s.timestamp_ms
                    status = s.status or STATUS_OF.get(s.reason, 400)
        if reason is not None and status == 200:
            status = STATUS_OF.get(reason, 400)
        if reason is not None and reason in ("Unregistered", "ExpiredToken") and ts is None:
            ts = int(self.clock() * 1000)
        if reason is None:
            self.accepted += 1
            conn.token_ok = conn.token_ok or not self.cert_auth
        else:
            self.rejected += 1
        if self.seen.maxlen:
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                payload = body
            self.seen.append(Seen(conn.number, sid, tok, topic,
                                  {k.decode(): v.decode("utf-8", "replace") for k, v in headers
                                   if k != b"authorization"},
                                  payload, status, reason,
                                  frozenset(k.decode() for k, _ in (h for h in headers
                                            if isinstance(h, NeverIndexedHeaderTuple)))))
        out = b""
        if reason is not None:
            doc: dict[str, Any] = {"reason": reason}
            if ts is not None:
                doc["timestamp"] = ts
            out = json.dumps(doc).encode()
        return sid, status, apns_id, out

    def _check_jwt(self, conn: _Conn, auth: bytes | None) -> str | None:
        if not auth:
            return "MissingProviderToken"
        if not auth.startswith(b"bearer "):
            return "InvalidProviderToken"
        token = auth[7:]
        now = self.clock()
        if token != conn.token:
            try:
                header = jwt.get_unverified_header(token)
                key = self.keys.get(header.get("kid"))
                if key is None or header.get("alg") != "ES256":
                    return "InvalidProviderToken"
                claims = jwt.decode(token, key, algorithms=["ES256"],
                                    options={"verify_iat": False, "verify_exp": False})
            except jwt.PyJWTError:
                return "InvalidProviderToken"
            if claims.get("iss") != self.team_id or not isinstance(claims.get("iat"), int):
                return "InvalidProviderToken"
            if conn.token is not None and now - conn.token_set_at < self.token_min_interval:
                return "TooManyProviderTokenUpdates"
            conn.token, conn.token_set_at, conn.claims = token, now, claims
            self.tokens_by_conn.setdefault(conn.number, []).append(token)
        iat = conn.claims["iat"]  # type: ignore[index]
        if now - iat > self.token_max_age:
            return "ExpiredProviderToken"
        if iat > now + 60:
            return "InvalidProviderToken"
        return None
