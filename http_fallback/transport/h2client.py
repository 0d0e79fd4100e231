"""One client HTTP/2 connection: a reader and a writer greenlet around an H2Channel.

The writer takes requests from a WorkQueue only while a stream is free: fewer streams open
than the server's acknowledged SETTINGS_MAX_CONCURRENT_STREAMS (1 until its SETTINGS came),
checked under the h2 lock, so a limit lowered meanwhile puts requests back, never fails them.
Bodies go out as the flow-control windows allow. Everything that happens to a request is
reported to the owner through `ConnectionOwner` callbacks; the connection decides nothing
about retries.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gevent import ssl
from gevent.event import Event
from gevent.pool import Group
from h2 import events as ev
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError, TooManyStreamsError
from h2.settings import SettingCodes
from hpack import NeverIndexedHeaderTuple

from http_fallback.transport.h2conn import (
    H2Channel,
    NothingWritten,
    TransportError,
    client_config,
    open_tls,
)
from http_fallback.transport.h2request import (
    ConnectionInfo,
    ConnectionOwner,
    FailureKind,
    H2Request,
    H2Response,
)
from http_fallback.transport.h2rules import H2PoolConfig, goaway_reason, stream_limit, unanswered
from http_fallback.transport.queue import WorkQueue

log = logging.getLogger(__name__)
_MAX_STREAMS = SettingCodes.MAX_CONCURRENT_STREAMS
_IO_ERRORS = (OSError, ssl.SSLError, ProtocolError)


class H2ClientConnection:
    """One TLS + HTTP/2 connection; `serve()` returns once it is closed and settled."""

    def __init__(self, owner: ConnectionOwner, source: WorkQueue, cfg: H2PoolConfig,
                 context: ssl.SSLContext, number: int, serial: int) -> None:
        self.owner = owner
        self.source = source
        self.cfg = cfg
        self.context = context
        self.number = number
        self.serial = serial
        self.protocol = "h2"
        self.authority = (cfg.server_hostname or cfg.host).encode()
        self.streams: dict[int, H2Request] = {}
        self.pending: dict[int, H2Request] = {}  # streams whose body waits for window
        self.in_hand: list[H2Request] = []  # taken from the queue, not yet written
        self.server_limit: int | None = None  # None until the server's SETTINGS
        self.limit = 1
        self.slot = Event()  # set when the writer may try again: room, window or closing
        self.slot.set()
        self.window_blocked = False  # the connection's send window ran out
        self.closing = False
        self.retired = Event()  # takes no new streams (GOAWAY, drain): its slot may reconnect
        self.closed = Event()
        self.close_reason: str | None = None
        self.failed = False  # closed by an error rather than by us or a GOAWAY
        self.goaway_last: int | None = None
        self.goaway_at = 0.0
        self.answered = 0
        self.opened = 0
        self.last_activity = self.last_used = time.monotonic()
        self.ping_sent_at: float | None = None
        self.group = Group()
        self.channel: H2Channel | None = None
        self._ticking = False
        self._settled = False

    @property
    def info(self) -> ConnectionInfo:
        return ConnectionInfo(self.number, self.serial, self.protocol)

    @property
    def busy(self) -> bool:
        """Streams in flight or requests in hand: closing now would cut them off."""
        return bool(self.streams or self.in_hand)

    def stats(self) -> dict[str, Any]:
        return {"number": self.number, "serial": self.serial, "protocol": self.protocol,
                "limit": self.limit, "server_limit": self.server_limit,
                "open_streams": len(self.streams), "answered": self.answered,
                "opened": self.opened, "closing": self.closing}

    # -- life cycle -------------------------------------------------------------------------
    def connect(self) -> None:
        """Open TLS and send the HTTP/2 preface; any failure is a TransportError."""
        cfg = self.cfg
        sock = open_tls(cfg.host, cfg.port, self.context, cfg.server_hostname or cfg.host,
                        cfg.connect_timeout)
        self.protocol = sock.selected_alpn_protocol() or "h2"
        self.channel = H2Channel(sock, client_config(), huffman=cfg.huffman,
                                 literal=not cfg.huffman)
        try:
            self.channel.exchange(lambda c: c.initiate_connection())
        except OSError as e:  # ssl.SSLError is an OSError
            self.channel.close()
            raise TransportError(f"{cfg.host}:{cfg.port}: {e}") from e
        self.last_activity = self.last_used = time.monotonic()

    def serve(self) -> None:
        self.group.spawn(self._reader)
        self.group.spawn(self._writer)
        self.closed.wait()
        self.group.join(timeout=1)
        self.group.kill(block=True, timeout=1)
        self.settle()

    def close(self, reason: str, failed: bool = False, goaway: bool = True) -> None:
        """Close now: no new streams; serve() then settles what was in flight."""
        if self.closed.is_set():
            return
        self.closing = True
        self.failed = self.failed or failed
        self.close_reason = self.close_reason or reason
        if goaway and self.channel is not None and not failed:
            try:
                self.channel.exchange(lambda c: c.close_connection())
            except _IO_ERRORS:
                pass
        if self.channel is not None:
            self.channel.close()
        self.slot.set()
        self.retired.set()
        self.closed.set()

    def drain(self, reason: str) -> None:
        """Stop opening streams; close once the streams in flight are answered."""
        self.closing = True
        self.close_reason = self.close_reason or reason
        self.slot.set()
        self.retired.set()
        if not self.streams:
            self.close(reason)

    def settle(self) -> None:
        """Report every request still here: back to the queue, or lost. Idempotent."""
        if self._settled:
            return
        self._settled = True
        owner = self.owner
        if self.in_hand:
            owner.unsent(self, self.in_hand)
            self.in_hand = []
        reason = self.close_reason or "ConnectionClosed"
        again = []
        for sid, req in sorted(self.streams.items()):
            if unanswered(sid, self.server_limit is not None,
                          self.goaway_last) is FailureKind.NOT_SENT:
                again.append(req)
            else:
                owner.lost(self, req, reason, "the connection closed before the answer")
        if again:
            owner.unprocessed(self, again, "GoAway" if self.goaway_last is not None
                              else "ConnectionFailed", f"not processed ({reason})")
        self.streams.clear()
        self.pending.clear()

    # -- writer -------------------------------------------------------------------------------
    def _writer(self) -> None:
        source = self.source
        try:
            while not self.closing:
                if len(self.streams) >= self.limit:
                    self.slot.clear()
                    self.slot.wait()
                    continue
                if not source.wait(timeout=1.0):
                    continue
                if self.closing:
                    break
                batch = source.take(self.limit - len(self.streams))
                if not batch:
                    continue
                self.in_hand = batch
                headers = self.owner.request_headers(self)
                if not self._transmit(headers) and not self.closing:
                    self.slot.wait(timeout=1.0)  # cleared under the lock when nothing went
        except _IO_ERRORS as e:
            self.close(f"write failed: {e}", failed=True, goaway=False)
        except Exception as e:  # e.g. the provider's request_headers failed: reconnect later
            log.exception("HTTP/2 connection %d: writer failed", self.number)
            self.close(f"write failed: {type(e).__name__}: {e}", failed=True, goaway=False)
        finally:
            if self.in_hand and not self.closed.is_set():
                back, self.in_hand = self.in_hand, []
                self.owner.unsent(self, back)

    def _transmit(self, extra: list[tuple[bytes, bytes]]) -> bool:
        """Open streams for what is in hand; False when none could be opened."""
        now = time.monotonic()
        sent: list[H2Request] = []
        head = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", self.authority)]
        never = self.cfg.path_never_indexed

        def put(conn: Any) -> None:
            hand, taken = self.in_hand, 0
            try:
                for req in hand:
                    if req.done:  # finished meanwhile (deadline, stop): nothing to send
                        taken += 1
                        continue
                    if self.closing or self.goaway_last is not None:
                        return
                    if len(self.streams) >= self.limit:
                        self.slot.clear()  # a limit lowered meanwhile: the rest goes back
                        return
                    if conn.outbound_flow_control_window <= 0:
                        self.window_blocked = True
                        self.slot.clear()
                        return
                    sid = conn.get_next_available_stream_id()
                    path = NeverIndexedHeaderTuple(b":path", req.path) if never \
                        else (b":path", req.path)
                    method = head if req.method == b"POST" \
                        else [(b":method", req.method), *head[1:]]
                    try:
                        conn.send_headers(sid, [*method, path, *extra, *req.headers],
                                          end_stream=not req.body)
                    except TooManyStreamsError:  # h2 counts more open than we do: wait
                        self.slot.clear()
                        return
                    taken += 1
                    req.sent_at = now
                    req.attempts += 1
                    req.r_headers, req.r_body, req.r_bytes, req.body_sent = None, b"", 0, 0
                    self.streams[sid] = req
                    sent.append(req)
                    if req.body:
                        self._push_body(conn, sid, req)
            finally:
                self.in_hand = hand[taken:] if taken else hand  # not opened: still in hand

        try:
            self.channel.exchange(put)  # type: ignore[union-attr]
        except NothingWritten:  # not one HEADERS frame reached the server: not sent at all
            self._unopen(sent)
            raise
        self.opened += len(sent)
        if self.in_hand:  # not opened: back to the front of the queue for any connection
            back, self.in_hand = self.in_hand, []
            self.owner.unsent(self, back)
        if sent:
            self.last_used = now
            self.owner.transmitted(self, sent)
        return bool(sent)

    def _unopen(self, reqs: list[H2Request]) -> None:
        """Forget streams whose frames never left: their requests go back in hand."""
        gone = set(map(id, reqs))
        for sid in [sid for sid, req in self.streams.items() if id(req) in gone]:
            del self.streams[sid]
            self.pending.pop(sid, None)
        for req in reqs:
            req.attempts -= 1
        self.in_hand = reqs + self.in_hand

    def _push_body(self, conn: Any, sid: int, req: H2Request) -> None:
        body = req.body
        while req.body_sent < len(body):
            size = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                       len(body) - req.body_sent)
            if size <= 0:
                self.pending[sid] = req
                return
            start = req.body_sent
            req.body_sent += size
            conn.send_data(sid, body[start:req.body_sent], end_stream=req.body_sent == len(body))
        self.pending.pop(sid, None)

    # -- reader -------------------------------------------------------------------------------
    def _reader(self) -> None:
        channel = self.channel
        assert channel is not None
        try:
            while True:
                data = channel.recv()
                if not data:
                    self.close("connection closed by server", failed=self.goaway_last is None,
                               goaway=False)
                    return
                self.last_activity = time.monotonic()
                done, unprocessed, note = channel.feed(data, self._on_events)
                self._report(done, unprocessed, note)
                if self.closing and not self.streams:
                    self.close(self.close_reason or "closing")
                    return
        except _IO_ERRORS as e:
            self.close(f"read failed: {e}", failed=True, goaway=False)
        except Exception as e:  # a dead reader with the connection left open would hang it
            log.exception("HTTP/2 connection %d: reader failed", self.number)
            self.close(f"read failed: {type(e).__name__}", failed=True, goaway=False)

    def _report(self, done: list[tuple[H2Request, H2Response | int]],
                unprocessed: list[H2Request], note: int) -> None:
        owner = self.owner
        if note & 1:
            owner.limit_changed(self)
        if note & 2:
            owner.goaway(self)
        if unprocessed:
            owner.unprocessed(self, unprocessed, "GoAway", f"not processed (GOAWAY "
                              f"last_stream_id {self.goaway_last}: {self.close_reason})")
        for req, result in done:
            self.answered += 1
            if isinstance(result, int):
                owner.reset(self, req, result)
            else:
                owner.answered(self, req, result)

    def _on_events(self, events: list[Any]) -> tuple[list[Any], list[H2Request], int]:
        """Runs under the channel lock: update stream state, collect finished streams."""
        done: list[tuple[H2Request, H2Response | int]] = []
        unprocessed: list[H2Request] = []
        note = 0
        conn = self.channel.conn  # type: ignore[union-attr]
        streams = self.streams
        cap = self.cfg.max_reply_bytes
        for e in events:
            t = type(e)
            if t is ev.ResponseReceived:
                req = streams.get(e.stream_id)
                if req is not None:
                    req.r_headers = e.headers
            elif t is ev.DataReceived:
                if e.flow_controlled_length:
                    conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                req = streams.get(e.stream_id)
                if req is not None and req.r_bytes < cap:
                    req.r_body += e.data[:cap - req.r_bytes]
                    req.r_bytes = len(req.r_body)
            elif t is ev.StreamEnded:
                req = streams.pop(e.stream_id, None)
                if req is not None:
                    if self.pending.pop(e.stream_id, None) is not None:
                        # answered before its body was all sent: end our half too, or h2
                        # would count the stream open for ever
                        conn.reset_stream(e.stream_id, ErrorCodes.NO_ERROR)
                    done.append((req, H2Response.of(req)))
            elif t is ev.StreamReset:
                req = streams.pop(e.stream_id, None)
                if req is not None:
                    self.pending.pop(e.stream_id, None)
                    done.append((req, int(e.error_code)))
            elif t is ev.RemoteSettingsChanged:
                changed = e.changed_settings.get(_MAX_STREAMS)
                if changed is not None or self.server_limit is None:
                    # SETTINGS without a stream limit means none from the server (0 here)
                    self.server_limit = changed.new_value if changed is not None else 0
                    self.limit = stream_limit(self.server_limit, self.cfg.max_streams)
                    note |= 1
            elif t is ev.WindowUpdated:
                if e.stream_id:
                    req = self.pending.get(e.stream_id)
                    if req is not None:
                        self._push_body(conn, e.stream_id, req)
                else:
                    for sid, req in list(self.pending.items()):
                        self._push_body(conn, sid, req)
                if self.window_blocked and conn.outbound_flow_control_window > 0:
                    self.window_blocked = False
                    self.slot.set()
            elif t is ev.PingAckReceived:
                self.ping_sent_at = None
            elif t is ev.ConnectionTerminated:
                note |= 2
                self._on_goaway(e, unprocessed)
        if self.closing or (len(streams) < self.limit and not self.window_blocked):
            self.slot.set()
        return done, unprocessed, note

    def _on_goaway(self, e: Any, unprocessed: list[H2Request]) -> None:
        last = e.last_stream_id
        if self.goaway_last is not None:
            last = min(last, self.goaway_last)
        else:
            self.goaway_at = time.monotonic()
        self.goaway_last = last
        self.closing = True
        self.retired.set()
        code = getattr(e.error_code, "name", e.error_code)
        self.close_reason = goaway_reason(e.additional_data) or f"GOAWAY {code}"
        if e.error_code != ErrorCodes.NO_ERROR:
            self.failed = True
        for sid in sorted(s for s in self.streams if s > last):
            unprocessed.append(self.streams.pop(sid))
            self.pending.pop(sid, None)

    # -- maintenance (called by the pool's ticker) ------------------------------------------
    def tick(self, now: float) -> None:
        """Deadlines, GOAWAY grace, PING and idle checks, in this connection's own greenlet:
        waiting for the lock here must never hold up the pool's ticker."""
        if self._ticking or self.closed.is_set() or self.channel is None:
            return
        self._ticking = True
        self.group.spawn(self._tick, now)

    def _tick(self, now: float) -> None:
        try:
            self._maintain(now)
        finally:
            self._ticking = False

    def _maintain(self, now: float) -> None:
        cfg = self.cfg
        expired = [sid for sid, req in self.streams.items() if now > req.deadline]
        if expired:
            def reset(conn: Any) -> None:
                for sid in expired:
                    conn.reset_stream(sid, ErrorCodes.CANCEL)
            reqs = [self.streams.pop(sid) for sid in expired]
            for sid in expired:
                self.pending.pop(sid, None)
            try:
                self.channel.exchange(reset)  # type: ignore[union-attr]
            except _IO_ERRORS:
                pass
            for req in reqs:
                self.owner.lost(self, req, "Timeout", "no answer before the request deadline")
            self.slot.set()
        if self.goaway_last is not None and self.streams \
                and now - self.goaway_at > cfg.goaway_grace:
            self.close(self.close_reason or "GOAWAY", goaway=False)
            return
        if self.closing and not self.streams:
            self.close(self.close_reason or "closing")
            return
        if self.ping_sent_at is not None:
            if now - self.ping_sent_at > cfg.ping_timeout:
                self.close("PING not answered", failed=True, goaway=False)
            return
        if not self.streams and not self.in_hand and not self.source \
                and now - self.last_used > cfg.idle_timeout:
            self.close("idle")
            return
        if now - self.last_activity > cfg.ping_interval:
            self.ping_sent_at = now
            try:
                self.channel.exchange(lambda c: c.ping(b"ccsping!"))  # type: ignore[union-attr]
            except _IO_ERRORS as e:
                self.close(f"ping failed: {e}", failed=True, goaway=False)

