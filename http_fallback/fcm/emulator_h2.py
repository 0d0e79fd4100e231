"""The FCM emulator's HTTP/2 side: one session per TLS connection that chose ALPN `h2`.

Requests are answered after the emulator's `latency` (plus any per-target delay) by one answer
greenlet per connection, in batches, so a slow answer never blocks reading. A request is
processed (scripts consumed, message counted) only when its answer is due, so streams above a
GOAWAY's last_stream_id are never processed, as the GOAWAY says.

GOAWAY is written as a raw frame: h2 moves its own state to CLOSED when it sends one, after which
it could not answer the streams at or below last_stream_id that a graceful server still answers.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from typing import Any, Protocol

from gevent import ssl
from gevent.event import Event
from gevent.lock import Semaphore
from h2 import events as ev
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from ccs.transport.h2conn import FastH2Connection

_order = itertools.count()


class _ServerConnection(FastH2Connection):
    """h2 checks the stream limit against its settings bookkeeping, which applies every pending
    change on the first ACK, even one the client has not seen yet; H2Session checks instead."""

    @property
    def open_inbound_streams(self) -> int:
        return 0


class H2Host(Protocol):
    """What an h2 connection reads from and counts on the emulator (FcmEmulator)."""

    max_streams: int
    latency: float
    goaway_after: int | None
    refuse: int  # the next N streams get REFUSED_STREAM
    refused: int
    goaways_sent: int
    max_active: int
    limit_violations: int

    @property
    def has_delays(self) -> bool: ...

    def delay_of(self, body: bytes) -> float: ...

    def answer(self, environ: dict[str, Any], body: bytes, at: float,
               protocol: str = "http/1.1", connection: int = 0
               ) -> tuple[int, list[tuple[str, str]], bytes]: ...


class H2Session:
    """One HTTP/2 connection of the emulator; `run()` serves it until it closes."""

    def __init__(self, emu: H2Host, sock: Any, number: int) -> None:
        self.emu = emu
        self.sock = sock
        self.number = number
        self.h2 = _ServerConnection(H2Configuration(client_side=False, header_encoding=None,
                                                   validate_outbound_headers=False),
                                   huffman=False)
        self.h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: emu.max_streams})
        self.lock = Semaphore()
        self.open: dict[int, list[Any]] = {}  # stream id -> [headers, body]
        self.due: list[tuple[float, int, int, list[Any], bytes, float]] = []  # a heap
        self.blocked: dict[int, bytes] = {}  # answer bodies waiting for window
        self.wake = Event()
        self.received = 0
        self.last_stream_id: int | None = None  # set once GOAWAY went out
        self.closed = False
        # the stream limit each SETTINGS frame we sent carried, oldest first; one leaves per
        # ACK. A limit binds once acknowledged (RFC 9113 6.5.3): none before the first ACK.
        self.unacked: deque[int | None] = deque([emu.max_streams])
        self.acked: float = math.inf
        self.raw_out = b""  # frames written around h2 (GOAWAY), after its pending output

    # -- control (from the emulator) -------------------------------------------------------

    def send_goaway(self, last_stream_id: int | None = None, answer_open: bool = True,
                    error: ErrorCodes = ErrorCodes.NO_ERROR, reason: str = "") -> None:
        """GOAWAY: streams above `last_stream_id` (default: the highest received) are never
        processed; those at or below are answered (answer_open) or abandoned as the socket
        closes."""
        with self.lock:
            if self.last_stream_id is not None or self.closed:
                return
            highest = self.h2.highest_inbound_stream_id
            last = highest if last_stream_id is None else min(last_stream_id, highest)
            self.last_stream_id = last
            frame = GoAwayFrame(0)
            frame.last_stream_id = last
            frame.error_code = int(error)
            frame.additional_data = reason.encode()
            self.emu.goaways_sent += 1
            try:
                self.sock.sendall(self.h2.data_to_send() + frame.serialize())
            except OSError:
                self.closed = True
        if not answer_open or not self._owed():
            self.close()
        else:
            self.wake.set()

    def set_stream_limit(self, limit: int) -> None:
        with self.lock:
            if self.closed:
                return
            self.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: limit})
            self.unacked.append(limit)
            try:
                self.sock.sendall(self.h2.data_to_send())
            except OSError:
                self.closed = True

    def close(self) -> None:
        self.closed = True
        self.wake.set()
        try:
            self.sock.close()
        except OSError:
            pass

    # -- serving ---------------------------------------------------------------------------

    def run(self) -> None:
        import gevent

        answers = gevent.spawn(self._answer_loop)
        try:
            with self.lock:
                self.h2.initiate_connection()
                self.sock.sendall(self.h2.data_to_send())
            while not self.closed:
                data = self.sock.recv(65536)
                if not data:
                    return
                with self.lock:
                    try:
                        events = self.h2.receive_data(data)
                    except ProtocolError:
                        self.sock.sendall(self.h2.data_to_send())  # h2 queued its GOAWAY
                        return
                    self._on_events(events)
                    out = self.h2.data_to_send()
                    if self.raw_out:
                        out, self.raw_out = out + self.raw_out, b""
                    if out:
                        self.sock.sendall(out)
        except (OSError, ssl.SSLError, ValueError):  # ValueError: closed by close() meanwhile
            return
        finally:
            self.close()
            answers.kill()

    def _on_events(self, events: list[Any]) -> None:
        emu = self.emu
        for e in events:
            t = type(e)
            if t is ev.RequestReceived:
                if len(self.open) >= self.acked:  # over the acknowledged limit: refused
                    emu.limit_violations += 1
                    self.h2.reset_stream(e.stream_id, ErrorCodes.REFUSED_STREAM)
                    continue
                self.open[e.stream_id] = [e.headers, b""]
                if len(self.open) > emu.max_active:
                    emu.max_active = len(self.open)
            elif t is ev.DataReceived:
                self.h2.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                request = self.open.get(e.stream_id)
                if request is not None:
                    request[1] += e.data
            elif t is ev.StreamEnded:
                self._request_complete(e.stream_id)
            elif t is ev.StreamReset:
                self.open.pop(e.stream_id, None)
                self.blocked.pop(e.stream_id, None)
            elif t is ev.SettingsAcknowledged and self.unacked:
                limit = self.unacked.popleft()
                if limit is not None:
                    self.acked = limit
            elif t is ev.WindowUpdated and self.blocked:
                for sid in list(self.blocked):
                    self._send_body(sid, self.blocked.pop(sid))

    def _request_complete(self, sid: int) -> None:
        request = self.open.get(sid)
        if request is None:
            return
        if self.last_stream_id is not None and sid > self.last_stream_id:
            self.open.pop(sid)  # after our GOAWAY: not processed, never answered
            return
        emu = self.emu
        if emu.refuse:
            emu.refuse -= 1
            emu.refused += 1
            self.open.pop(sid)
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        self.received += 1
        now = time.monotonic()
        wait = emu.latency + (emu.delay_of(request[1]) if emu.has_delays else 0.0)
        item = (now + wait, next(_order), sid, request[0], request[1], now)
        heapq.heappush(self.due, item)
        if self.due[0] is item:
            self.wake.set()
        if emu.goaway_after and self.received == emu.goaway_after:
            # after this request: every later stream on this connection goes unprocessed
            self.last_stream_id = sid
            frame = GoAwayFrame(0)
            frame.last_stream_id = sid
            frame.additional_data = b"emulator: goaway_after"
            emu.goaways_sent += 1
            self.raw_out += frame.serialize()  # sent after h2's own output of this read

    def _owed(self) -> int:
        return len(self.due) + len(self.blocked)

    def _answer_loop(self) -> None:
        while not self.closed:
            self.wake.clear()
            if not self.due:
                if self.last_stream_id is not None and not self.blocked:
                    self.close()  # everything at or below the GOAWAY is answered
                    return
                self.wake.wait()
                continue
            wait = self.due[0][0] - time.monotonic()
            if wait > 0:
                self.wake.wait(wait)
                continue
            now = time.monotonic()
            batch = []
            while self.due and self.due[0][0] <= now:
                batch.append(heapq.heappop(self.due))
            self._answer(batch)

    def _answer(self, batch: list[tuple[float, int, int, list[Any], bytes, float]]) -> None:
        emu = self.emu
        replies = []
        last = self.last_stream_id
        for _, _, sid, headers, body, at in batch:
            if last is not None and sid > last:
                self.open.pop(sid, None)  # GOAWAY'd before its answer was due: unprocessed
                continue
            replies.append((sid, *emu.answer(_environ(headers, body), body, at, "h2",
                                             self.number)))
        with self.lock:
            if self.closed:
                return
            h2 = self.h2
            try:
                for sid, status, hdrs, data in replies:
                    self.open.pop(sid, None)
                    if h2.streams.get(sid) is None or h2.streams[sid].closed:
                        continue  # the client reset it meanwhile
                    h2.send_headers(sid, [(b":status", str(status).encode())]
                                    + [(k.lower().encode(), v.encode()) for k, v in hdrs])
                    self._send_body(sid, data)
                out = h2.data_to_send()
                if out:
                    self.sock.sendall(out)
            except (OSError, ProtocolError):
                self.closed = True
                self.sock.close()

    def _send_body(self, sid: int, data: bytes) -> None:
        h2 = self.h2
        room = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size)
        if room >= len(data):
            h2.send_data(sid, data, end_stream=True)
            return
        if room > 0:
            h2.send_data(sid, data[:room])
        self.blocked[sid] = data[room:]


def _environ(headers: list[tuple[bytes, bytes]], body: bytes) -> dict[str, Any]:
    """The few WSGI environ keys the emulator's answer reads, from HTTP/2 headers."""
    env: dict[str, Any] = {"CONTENT_LENGTH": str(len(body))}
    for name, value in headers:
        if name == b":method":
            env["REQUEST_METHOD"] = value.decode()
        elif name == b":path":
            path, _, query = value.decode("latin-1").partition("?")
            env["PATH_INFO"], env["QUERY_STRING"] = path, query
        elif name == b"authorization":
            env["HTTP_AUTHORIZATION"] = value.decode("latin-1")
        elif name == b"access_token_auth":
            env["fcm.access_token_auth"] = value.decode("latin-1")
    return env
