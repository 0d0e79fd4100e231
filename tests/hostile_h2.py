"""A hostile APNs-like HTTP/2 server for tests: TLS, ALPN h2, h2 on gevent, loopback.

Written from RFC 9113 and docs/providers/apns.rst, not from the emulator, and unkind where
both allow: SETTINGS_MAX_CONCURRENT_STREAMS lowered to 1 after every rejected push (raised
again after an accepted one), GOAWAY (NO_ERROR) after N answers while hundreds of streams
are open, tiny receive windows, answer latency, a share of tokens answered 410/400/429/500/503.
It counts what a client must never do: open a stream above the limit it acknowledged, send a
notification again after its final answer, overrun a flow-control window.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.lock import Semaphore
from gevent.server import StreamServer
from h2 import events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import FlowControlError, ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from ccs.transport.tls import server_context

MCS = SettingCodes.MAX_CONCURRENT_STREAMS
# token number % 20 -> (status, reason): a quarter of tokens are refused
REFUSALS = {0: (410, "Unregistered"), 1: (400, "BadDeviceToken"), 2: (429, "TooManyRequests"),
            3: (500, "InternalServerError"), 4: (503, "ServiceUnavailable")}
FINAL_STATUSES = {200, 400, 410}  # answers after which the notification must never come back


def verdict(token: str) -> tuple[int, str | None]:
    """What the server answers a token (token(n) from tests.apns_support: n % 20 decides)."""
    try:
        n = int(token, 16)
    except ValueError:
        return 400, "BadDeviceToken"
    return REFUSALS.get(n % 20, (200, None))


@dataclass
class Behaviour:
    """Each unkind thing on its own switch; ALL turns every one on."""

    streams: int = 1000  # the MAX_CONCURRENT_STREAMS announced first
    drop_to_one: bool = False  # 1 after every rejected push, back to `streams` after a 200
    goaway_after: int | None = None  # answers on a connection before its GOAWAY
    goaway_last: int = 599  # last_stream_id (capped by the highest stream seen)
    goaway_silent: bool = False  # never answer the streams the GOAWAY kept
    window: int | None = None  # SETTINGS_INITIAL_WINDOW_SIZE for request bodies
    latency: float = 0.0  # before each answer
    hold: int = 0  # answer nothing on a connection until this many streams are open (<= 2 s)
    refusals: bool = False  # answer tokens by `verdict`, else 200 for all
    error_pad: int = 0  # spaces appended to error bodies (the client must ack its window)


ALL = Behaviour(drop_to_one=True, goaway_after=300, window=1024, latency=0.002, refusals=True,
                error_pad=700)


class _NoCount(H2Connection):
    """h2 would kill the connection on a stream over the limit; the server counts it."""

    @property
    def open_inbound_streams(self) -> int:
        return 0


class _Link:
    def __init__(self, number: int, sock: Any, h2: H2Connection, streams: int) -> None:
        self.number = number
        self.sock = sock
        self.h2 = h2
        self.lock = Semaphore()
        self.open: set[int] = set()  # streams begun and not yet answered or reset
        self.requests: dict[int, tuple[str, str]] = {}  # stream -> (token, apns-id)
        self.acked = math.inf  # the stream limit the client has acknowledged
        # the stream limit each SETTINGS frame sent carried (None: none), oldest first; h2's
        # own bookkeeping pops every setting's oldest change on any ACK, so it can run ahead
        self.unacked: deque[int | None] = deque([streams])
        self.settled = False  # the opening SETTINGS are acknowledged: limits may move
        self.announced = streams
        self.answered = 0
        self.goaway_last: int | None = None
        self.held: list[int] = []  # answers kept back until `hold` streams are open
        self.holding = False
        self.backlog: list[tuple[int, str, int, bytes, list[tuple[str, str]]]] = []


class HostileApns:
    """Use as a context manager; counters describe what happened once the client is done."""

    def __init__(self, pki: Any, behaviour: Behaviour) -> None:
        self.b = behaviour
        self.connections = 0
        self.client_closes = 0  # connections the client ended before any GOAWAY of ours
        self.goaways = 0
        self.violations = 0  # streams opened over the acknowledged limit
        self.protocol_errors: list[str] = []
        self.resent_after_final = 0
        self.requests = 0
        self.answers: Counter[int] = Counter()
        self.by_id: dict[str, list[int]] = {}
        self.max_open = 0
        self.missing_auth = 0
        self.window_waits = 0  # answers that waited for the client to open its window
        self.goaway_open: list[tuple[int, int]] = []  # per GOAWAY: streams open, above last
        self._numbers = itertools.count(1)
        self._links: dict[int, _Link] = {}
        self.violation_log: list[tuple[int, int, float]] = []  # (connection, open, limit)
        self._ctx = server_context(pki.cert_file, pki.key_file, alpn=["h2"])
        self.server = StreamServer(("127.0.0.1", 0), self._handle)

    @property
    def port(self) -> int:
        return self.server.server_port

    def __enter__(self) -> HostileApns:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(timeout=1)

    # -- one connection -------------------------------------------------------------------
    def _handle(self, raw: Any, _addr: Any) -> None:
        try:
            sock = self._ctx.wrap_socket(raw, server_side=True)
        except OSError:  # e.g. a reachability probe that never starts TLS
            raw.close()
            return
        self.connections += 1
        number = next(self._numbers)
        b = self.b
        h2 = _NoCount(H2Configuration(client_side=False, header_encoding=None))
        h2.local_settings = Settings(client=False, initial_values={MCS: b.streams})
        link = _Link(number, sock, h2, b.streams)
        link.holding = bool(b.hold)
        if b.hold:
            gevent.spawn_later(2.0, lambda: self._answer(link, self._release(link)))
        self._links[number] = link
        try:
            with link.lock:
                h2.initiate_connection()
                if b.window is not None:  # a second SETTINGS: h2 applies it once acknowledged
                    h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: b.window})
                    link.unacked.append(None)
                sock.sendall(h2.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    if link.goaway_last is None:
                        self.client_closes += 1
                    return
                with link.lock:
                    try:
                        events = h2.receive_data(data)
                    except (FlowControlError, ProtocolError) as e:
                        self.protocol_errors.append(f"{type(e).__name__}: {e}")
                        return
                    ready = self._on_events(link, events)
                    sock.sendall(h2.data_to_send())
                    if link.holding:
                        link.held.extend(ready)
                        ready = []
                        if len(link.open) >= b.hold:
                            ready = self._release(link)
                if ready:
                    if b.latency:
                        gevent.spawn_later(b.latency, self._answer, link, ready)
                    else:
                        self._answer(link, ready)
        except OSError:
            return
        finally:
            self._links.pop(number, None)
            sock.close()

    def _release(self, link: _Link) -> list[int]:
        link.holding = False
        held, link.held = link.held, []
        return held

    def _on_events(self, link: _Link, events: list[Any]) -> list[int]:
        ready = []
        h2 = link.h2
        for e in events:
            t = type(e)
            if t is ev.RequestReceived:
                self._begin(link, e)
            elif t is ev.DataReceived:
                if e.flow_controlled_length:
                    h2.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif t is ev.StreamEnded:
                if e.stream_id in link.open and e.stream_id in link.requests:
                    ready.append(e.stream_id)
            elif t is ev.StreamReset:
                link.open.discard(e.stream_id)
            elif t is ev.SettingsAcknowledged:
                limit = link.unacked.popleft()
                if limit is not None:
                    link.acked = limit
                link.settled = link.settled or not link.unacked
            elif t is ev.WindowUpdated:
                backlog, link.backlog = link.backlog, []
                for item in backlog:
                    if item[0] in link.open:  # not one a GOAWAY since said was not processed
                        self._reply(link, *item)
        if link.goaway_last is not None and self.b.goaway_silent:
            return []
        return ready

    def _begin(self, link: _Link, e: Any) -> None:
        sid = e.stream_id
        headers = dict(e.headers)
        if link.goaway_last is not None and sid > link.goaway_last:
            return  # not processed, not answered: the client learnt that from the GOAWAY
        if len(link.open) >= link.acked:
            self.violations += 1
            self.violation_log.append((link.number, len(link.open), link.acked))
            link.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        link.open.add(sid)
        self.max_open = max(self.max_open, len(link.open))
        self.requests += 1
        if not headers.get(b"authorization", b"").startswith(b"bearer "):
            self.missing_auth += 1
        path = headers.get(b":path", b"").decode()
        token = path.rsplit("/", 1)[-1]
        apns_id = headers.get(b"apns-id", b"").decode()
        if any(s in FINAL_STATUSES for s in self.by_id.get(apns_id, ())):
            self.resent_after_final += 1
        link.requests[sid] = (token, apns_id)

    def _answer(self, link: _Link, sids: list[int]) -> None:
        b = self.b
        with link.lock:
            h2 = link.h2
            for sid in sids:
                if sid not in link.open:
                    continue
                token, apns_id = link.requests.pop(sid)
                status, reason = verdict(token) if b.refusals else (200, None)
                headers = [(":status", str(status)), ("apns-id", apns_id)]
                body = b""
                if reason is not None:
                    doc: dict[str, Any] = {"reason": reason}
                    if status == 410:
                        doc["timestamp"] = 1_700_000_000_000
                    body = json.dumps(doc).encode() + b" " * b.error_pad
                    headers.append(("content-type", "application/json"))
                self._reply(link, sid, apns_id, status, body, headers)
                self._answered(link, status)
            try:
                link.sock.sendall(h2.data_to_send())
            except OSError:
                return
        # after a GOAWAY the client closes once its kept streams are answered; closing here
        # with its bytes unread would send a TCP reset, and lose answers in its buffers

    def _reply(self, link: _Link, sid: int, apns_id: str, status: int, body: bytes,
               headers: list[tuple[str, str]]) -> None:
        h2 = link.h2
        if body and h2.local_flow_control_window(sid) < len(body):
            self.window_waits += 1
            link.backlog.append((sid, apns_id, status, body, headers))
            return
        h2.send_headers(sid, headers, end_stream=not body)
        if body:
            h2.send_data(sid, body, end_stream=True)
        link.open.discard(sid)
        link.answered += 1
        self.answers[status] += 1
        self.by_id.setdefault(apns_id, []).append(status)

    def _answered(self, link: _Link, status: int) -> None:
        """After each answer: the limit may change, and the GOAWAY may be due."""
        self._adjust_limit(link, status)
        b = self.b
        if b.goaway_after and link.answered == b.goaway_after and link.goaway_last is None:
            self._goaway(link)

    def _adjust_limit(self, link: _Link, status: int) -> None:
        if not self.b.drop_to_one or not link.settled:
            return
        want = self.b.streams if status == 200 else 1
        if want != link.announced:
            link.announced = want
            link.h2.update_settings({MCS: want})
            link.unacked.append(want)

    def _goaway(self, link: _Link) -> None:
        """GOAWAY written by hand: h2 would refuse to answer the streams it keeps."""
        last = min(self.b.goaway_last, link.h2.highest_inbound_stream_id)
        link.goaway_last = last
        self.goaways += 1
        frame = GoAwayFrame(0)
        frame.last_stream_id = last
        frame.error_code = 0
        frame.additional_data = b'{"reason":"Shutdown"}'
        link.sock.sendall(link.h2.data_to_send() + frame.serialize())
        above = [s for s in link.open if s > last]
        self.goaway_open.append((len(link.open), len(above)))
        for sid in above:
            link.open.discard(sid)
            link.requests.pop(sid, None)
