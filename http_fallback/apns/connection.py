"""One APNs HTTP/2 connection: a reader and a writer greenlet around an H2Channel.

The writer takes requests from the pool's queue while streams are free (the server's
SETTINGS_MAX_CONCURRENT_STREAMS, 1 until SETTINGS arrive, capped by config); the reader turns
h2 events into replies. Closing sorts what was in flight: streams above a GOAWAY's
last_stream_id go back to the queue, the rest without a reply are reported UNKNOWN.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from gevent import ssl
from gevent.event import Event
from gevent.pool import Group
from h2 import events as ev
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from hpack import NeverIndexedHeaderTuple

from http_fallback.apns.protocol import Reply, goaway_reason, parse_reply, token_needs_refresh
from http_fallback.transport.h2conn import H2Channel, TransportError, client_config, open_tls

if TYPE_CHECKING:
    from http_fallback.apns.pool import ApnsPool, Request

log = logging.getLogger(__name__)
_MAX_STREAMS = SettingCodes.MAX_CONCURRENT_STREAMS
MAX_REPLY_BYTES = 64 * 1024  # kept of one reply body


class ApnsConnection:
    """One TLS+HTTP/2 connection; `serve()` returns once it is closed and settled."""

    def __init__(self, pool: ApnsPool, number: int) -> None:
        self.pool = pool
        self.number = number
        cfg = pool.config
        self.authority = (cfg.server_hostname or cfg.host).encode()
        self.streams: dict[int, Request] = {}
        self.held: deque[Request] = deque()  # taken from the queue, waiting for flow window
        self.limit = 1  # until the server's SETTINGS arrive
        self.server_limit: int | None = None
        self.slot = Event()
        self.slot.set()
        self.window = Event()
        self.closing = False
        self.closed = Event()
        self.close_reason: str | None = None
        self.failed = False  # closed by an error rather than by us or a graceful GOAWAY
        self.goaway_last: int | None = None
        self.answered = 0
        self.last_activity = self.last_used = time.monotonic()
        self.ping_sent_at: float | None = None
        self.token: bytes | None = None
        self.token_at = 0.0
        self.group = Group()
        self.channel: H2Channel | None = None
        self._ticking = False

    # -- life cycle -------------------------------------------------------------------------
    def connect(self) -> None:
        """Open TLS and send the HTTP/2 preface; any failure is a TransportError."""
        cfg = self.pool.config
        sock = open_tls(cfg.host, cfg.port, self.pool.context, cfg.server_hostname or cfg.host,
                        cfg.connect_timeout)
        self.channel = H2Channel(sock, client_config())
        try:
            self.channel.exchange(lambda c: c.initiate_connection())
        except OSError as e:  # ssl.SSLError is an OSError
            self.channel.close()
            raise TransportError(f"{cfg.host}:{cfg.port}: {e}") from e
        if self.pool.signer is not None:
            self._mint_token()
        self.last_activity = self.last_used = time.monotonic()

    def serve(self) -> None:
        self.group.spawn(self._reader)
        self.group.spawn(self._writer)
        self.closed.wait()
        self.group.kill(block=True, timeout=1)
        self._settle()

    def close(self, reason: str, failed: bool = False, goaway: bool = True) -> None:
        """Begin closing: no new streams; the socket is shut and serve() settles the rest."""
        if self.closed.is_set():
            return
        self.closing = True
        self.failed = self.failed or failed
        self.close_reason = self.close_reason or reason
        if goaway and self.channel is not None and not failed:
            try:
                self.channel.exchange(lambda c: c.close_connection())
            except (OSError, ProtocolError, ssl.SSLError):
                pass
        if self.channel is not None:
            self.channel.close()
        self.slot.set()
        self.window.set()
        self.closed.set()

    def drain(self, reason: str) -> None:
        """Stop taking new requests; close once the streams in flight are answered."""
        self.closing = True
        self.close_reason = self.close_reason or reason
        self.slot.set()
        if not self.streams:
            self.close(reason)

    def _settle(self) -> None:
        pool = self.pool
        for req in self.held:
            pool.requeue(req)
        self.held.clear()
        for sid, req in sorted(self.streams.items()):
            if self.server_limit is None:
                # no server preface ever came (e.g. TLS alert after the handshake): unprocessed
                pool.retry_now(req, "ConnectionFailed", self.close_reason or "no SETTINGS")
            elif self.goaway_last is not None and sid > self.goaway_last:
                pool.retry_now(req, "GoAway", f"not processed (GOAWAY last_stream_id "
                               f"{self.goaway_last}: {self.close_reason})")
            else:
                pool.unknown(req, self.close_reason or "ConnectionClosed")
        self.streams.clear()

    # -- token --------------------------------------------------------------------------------
    def _mint_token(self) -> None:
        now = self.pool.clock()
        self.token = b"bearer " + self.pool.signer.make(now).encode()  # type: ignore[union-attr]
        self.token_at = now

    # -- writer -------------------------------------------------------------------------------
    def _writer(self) -> None:
        queue = self.pool.queue
        try:
            while not self.closing:
                while len(self.streams) >= self.limit and not self.closing:
                    self.slot.clear()
                    self.slot.wait()
                if self.closing:
                    break
                req = self.held.popleft() if self.held else queue.get()
                if self.closing:
                    self.pool.requeue(req)
                    break
                batch = [req]
                free = self.limit - len(self.streams) - 1
                while free > 0 and (self.held or queue.qsize()):
                    batch.append(self.held.popleft() if self.held else queue.get_nowait())
                    free -= 1
                self._transmit(batch)
                if self.held and not self.closing:
                    self.window.clear()
                    self.window.wait(timeout=self.pool.config.request_timeout)
        except (OSError, ssl.SSLError, ProtocolError) as e:
            self.close(f"write failed: {e}", failed=True)

    def _transmit(self, batch: list[Request]) -> None:
        now = time.monotonic()
        if self.token is not None and token_needs_refresh(
                self.token_at, self.pool.clock(), self.pool.config.token_refresh):
            self._mint_token()
        sent: list[Request] = []

        def put(conn: Any) -> None:
            head = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", self.authority)]
            for i, req in enumerate(batch):
                if req.result.ready():
                    continue
                if now > req.deadline:
                    self.pool.expire_queued(req)
                    continue
                body = req.prepared.body
                if conn.outbound_flow_control_window < len(body):
                    self.held.extend(batch[i:])
                    return
                sid = conn.get_next_available_stream_id()
                headers = [*head, NeverIndexedHeaderTuple(b":path", req.prepared.path)]
                if self.token is not None:
                    headers.append(NeverIndexedHeaderTuple(b"authorization", self.token))
                headers.extend(req.prepared.headers)
                conn.send_headers(sid, headers)
                conn.send_data(sid, body, end_stream=True)
                req.sent_at = now
                req.attempts += 1
                req.r_headers, req.r_body = None, b""
                self.streams[sid] = req
                sent.append(req)

        self.channel.exchange(put)  # type: ignore[union-attr]
        if sent:
            self.last_used = now
            self.pool.transmitted(sent, self)

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
                done = channel.feed(data, self._on_events)
                for req, reply in done:
                    self.pool.complete(req, reply, self)
                if self.goaway_last is not None:  # h2 is CLOSED now: settle in serve()
                    self.close(self.close_reason or "GOAWAY", goaway=False)
                    return
                if self.closing and not self.streams:
                    self.close(self.close_reason or "closing")
                    return
        except (OSError, ssl.SSLError, ProtocolError) as e:
            self.close(f"read failed: {e}", failed=True, goaway=False)
        except Exception as e:  # a dead reader with the connection left open would hang it
            log.exception("APNs connection %d: reader failed", self.number)
            self.close(f"read failed: {type(e).__name__}", failed=True, goaway=False)

    def _on_events(self, events: list[Any]) -> list[tuple[Request, Reply | int]]:
        """Runs under the channel lock: update stream state, collect finished streams."""
        done: list[tuple[Request, Reply | int]] = []
        conn = self.channel.conn  # type: ignore[union-attr]
        streams = self.streams
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
                if req is not None and len(req.r_body) < MAX_REPLY_BYTES:
                    # APNs replies are a few dozen bytes of JSON; more is read and dropped
                    req.r_body += e.data[:MAX_REPLY_BYTES - len(req.r_body)]
            elif t is ev.StreamEnded:
                req = streams.pop(e.stream_id, None)
                if req is not None:
                    done.append((req, self._reply(req)))
            elif t is ev.StreamReset:
                req = streams.pop(e.stream_id, None)
                if req is not None:
                    done.append((req, int(e.error_code)))
            elif t is ev.RemoteSettingsChanged:
                changed = e.changed_settings.get(_MAX_STREAMS)
                if changed is not None:
                    self.server_limit = changed.new_value
                    self.limit = max(1, min(changed.new_value, self.pool.config.max_streams))
                    self.pool.limit_changed(self)
                elif self.server_limit is None:
                    # SETTINGS without a stream limit means no limit from the server
                    self.server_limit = 0
                    self.limit = self.pool.config.max_streams
            elif t is ev.WindowUpdated:
                self.window.set()
            elif t is ev.PingAckReceived:
                self.ping_sent_at = None
            elif t is ev.ConnectionTerminated:
                self.goaway_last = e.last_stream_id
                self.closing = True
                self.close_reason = goaway_reason(e.additional_data) or f"GOAWAY {e.error_code}"
        if len(streams) < self.limit:
            self.slot.set()
        return done

    @staticmethod
    def _reply(req: Request) -> Reply:
        headers = req.r_headers or []
        status = 0
        hmap: dict[bytes, bytes] = {}
        for k, v in headers:
            if k == b":status":
                status = int(v) if v.isdigit() and len(v) == 3 else 0
            else:
                hmap[k] = v
        return parse_reply(status, hmap, req.r_body)

    # -- maintenance (called by the pool's ticker) ------------------------------------------
    def tick(self, now: float) -> None:
        """Deadlines, PING and idle checks, in this connection's own greenlet: waiting for the
        lock here must never hold up the pool's ticker."""
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
        cfg = self.pool.config
        expired = [sid for sid, req in self.streams.items() if now > req.deadline]
        if expired:
            def reset(conn: Any) -> None:
                for sid in expired:
                    conn.reset_stream(sid, ErrorCodes.CANCEL)
            reqs = [self.streams.pop(sid) for sid in expired]
            try:
                self.channel.exchange(reset)
            except (OSError, ProtocolError, ssl.SSLError):
                pass
            for req in reqs:
                self.pool.unknown(req, "Timeout", "no answer before the request deadline")
            self.slot.set()
        if self.closing and not self.streams:
            self.close(self.close_reason or "closing")
            return
        if self.ping_sent_at is not None:
            if now - self.ping_sent_at > cfg.ping_timeout:
                self.close("PING not answered", failed=True, goaway=False)
            return
        if not self.streams and now - self.last_used > cfg.idle_timeout:
            self.close("idle")
            return
        if now - self.last_activity > cfg.ping_interval:
            self.ping_sent_at = now
            try:
                self.channel.exchange(lambda c: c.ping(b"ccsping!"))
            except (OSError, ProtocolError, ssl.SSLError) as e:
                self.close(f"ping failed: {e}", failed=True, goaway=False)

