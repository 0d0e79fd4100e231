"""Client for the binary interface (retired 2021): enhanced frames, error responses, resends.

The gateway never confirms success: a notification resolves OK once `quiet_period` passes
with no error naming it (extra["confirmed"] is False); an error response resolves the one it
names as FAILED and everything written after it is sent again on a new connection.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from typing import Any

import gevent
from gevent import ssl
from gevent.event import Event
from gevent.pool import Group
from gevent.queue import Queue

from ccs.outcome import Listeners, Outcome, SendResult, Status, TokenEvent, TokenEventKind
from http_fallback.apns.auth import certificate_context
from http_fallback.apns.binary.cache import SentCache
from http_fallback.apns.binary.frames import (
    ERROR_SIZE,
    MAX_PAYLOAD,
    STATUS,
    FrameError,
    encode_enhanced,
    encode_frame,
    parse_error,
)
from http_fallback.apns.config import ApnsConfig
from http_fallback.apns.model import Notification, NotificationError
from http_fallback.apns.protocol import backoff, encode_payload
from http_fallback.transport.h2conn import TransportError, open_tls

VIA = "apns-binary"
log = logging.getLogger(__name__)


def _context(config: ApnsConfig) -> ssl.SSLContext:
    return certificate_context(
        ca_file=config.ca_file, cert_file=config.cert_file, key_file=config.key_for_cert,
        passphrase=config.passphrase, cert_data=config.cert_data, pfx_file=config.pfx_file,
        pfx_data=config.pfx_data)


class _Item:
    __slots__ = ("token", "payload", "expiry", "priority", "result", "attempts", "sent_at")

    def __init__(self, token: str, payload: bytes, expiry: int, priority: int) -> None:
        self.token, self.payload, self.expiry, self.priority = token, payload, expiry, priority
        self.result = SendResult()
        self.attempts = 0
        self.sent_at = 0.0


class BinaryClient:
    """send(Notification) -> SendResult over the binary gateway (certificate auth)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext,
                 server_hostname: str | None = None, cache_length: int = 100,
                 auto_adjust_cache: bool = True, payload_limit: int = MAX_PAYLOAD,
                 command: int = 2, quiet_period: float = 1.0, connect_timeout: float = 10.0,
                 reconnect_base: float = 0.5, reconnect_cap: float = 30.0) -> None:
        if command not in (1, 2):
            raise ValueError("BinaryClient.command must be 1 (enhanced) or 2 (frame)")
        self.host, self.port, self.context = host, port, context
        self.server_hostname = server_hostname
        self.cache = SentCache(cache_length, auto_adjust_cache)
        self.payload_limit, self.command = payload_limit, command
        self.quiet_period, self.connect_timeout = quiet_period, connect_timeout
        self.reconnect_base, self.reconnect_cap = reconnect_base, reconnect_cap
        self.token_events = Listeners()
        self.transmitted = Listeners()  # token hex, each write
        self.transmission_error = Listeners()  # (status name, token hex or None)
        self.cache_too_small = Listeners()  # estimated number lost
        self.connected = Listeners()
        self.disconnected = Listeners()  # reason
        self._queue: Queue = Queue()
        self._front: deque[_Item] = deque()
        self._ids = itertools.count(1)
        self._group = Group()
        self._running = False

    @classmethod
    def from_config(cls, config: ApnsConfig, **kw: Any) -> BinaryClient:
        """The gateway from ApnsConfig (legacy_host/port), with its certificate."""
        return cls(config.legacy_host, config.legacy_port, _context(config), **kw)

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._group.spawn(self._run)
            self._group.spawn(self._ticker)

    def stop(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self._queue.qsize() or self._front or any(
                not it.result.ready() for _, it in self.cache.items)):
            gevent.sleep(0.01)
        self._running = False
        self._group.kill(timeout=2)
        for _, it in self.cache.items:
            it.result.resolve(self._outcome(it, Status.UNKNOWN, "Stopped"))
        for it in [*self._front, *self._queue.queue]:
            it.result.resolve(self._outcome(it, Status.FAILED, "Stopped", retryable=True))

    def send(self, n: Notification) -> SendResult:
        try:
            if not n.device:
                raise NotificationError("device", "missing device token")
            payload = encode_payload(n.to_payload())
            if len(payload) > self.payload_limit:
                raise NotificationError("payload", f"{len(payload)} bytes exceeds the "
                                        f"{self.payload_limit}-byte binary interface limit")
            token = n.device.lower()
            encode_enhanced(0, 0, token, b"")  # checks the token: 32 bytes of hex
        except (NotificationError, FrameError, ValueError) as e:
            res = SendResult()
            res.resolve(Outcome(Status.FAILED, VIA, n.device, error="InvalidNotification",
                                description=str(e)))
            return res
        item = _Item(token, payload, n.expiry or 0, n.priority or 10)
        self._queue.put(item)
        return item.result

    # -- internals ------------------------------------------------------------------------
    def _outcome(self, it: _Item, status: Status, error: str | None = None,
                 retryable: bool = False) -> Outcome:
        return Outcome(status, VIA, it.token, error=error, retryable=retryable,
                       attempts=it.attempts, extra={"confirmed": False} if status is Status.OK
                       else {})

    def _run(self) -> None:
        failures = 0
        while self._running:
            if not self._front:
                self._queue.peek()
            try:
                sock = open_tls(self.host, self.port, self.context, self.server_hostname,
                                self.connect_timeout, alpn=None)
            except TransportError as e:
                failures += 1
                self.disconnected.emit(str(e))
                gevent.sleep(backoff(failures, self.reconnect_base, self.reconnect_cap))
                continue
            self.connected.emit(None)
            closed = Event()
            reader = self._group.spawn(self._reader, sock, closed)
            writer = self._group.spawn(self._writer, sock, closed)
            closed.wait()
            writer.kill()
            reader.kill()
            sock.close()
            failures = 0

    def _writer(self, sock: Any, closed: Event) -> None:
        try:
            while not closed.is_set():
                it = self._front.popleft() if self._front else self._queue.get()
                if closed.is_set():  # this connection ended while we waited
                    self._front.appendleft(it)
                    return
                if it.result.ready():
                    continue
                ident = next(self._ids)
                if self.command == 1:
                    data = encode_enhanced(ident, it.expiry, it.token, it.payload)
                else:
                    data = encode_frame(ident, it.expiry, it.token, it.payload, it.priority)
                it.attempts += 1
                it.sent_at = time.monotonic()
                out = self.cache.add(ident, it)
                if out is not None and not out.result.ready():
                    # no error can be matched to it any more: OK only if it had its quiet time
                    quiet = it.sent_at - out.sent_at > self.quiet_period
                    out.result.resolve(self._outcome(out, Status.OK) if quiet else self._outcome(
                        out, Status.UNKNOWN, "CacheTooSmall"))
                sock.sendall(data)
                if self.transmitted:
                    self.transmitted.emit(it.token)
        except OSError as e:
            self.disconnected.emit(f"write failed: {e}")
            closed.set()

    def _reader(self, sock: Any, closed: Event) -> None:
        buf = b""
        try:
            while len(buf) < ERROR_SIZE:
                data = sock.recv(64)
                if not data:
                    break
                buf += data
        except OSError:
            pass
        reason = "closed by gateway"
        if len(buf) >= ERROR_SIZE:
            try:
                self._on_error(*parse_error(buf))
            except FrameError as e:  # not an error response: the stream cannot be trusted
                reason = f"unreadable answer from gateway: {e}"
                log.warning("APNs binary: %s", reason)
        self.disconnected.emit(reason)
        closed.set()

    def _on_error(self, status: int, ident: int) -> None:
        name = STATUS.get(status, f"Status{status}")
        res = self.cache.on_error(ident, shutdown=status == 10)
        for it in res.accepted:  # the gateway works in order: all before it went through
            it.result.resolve(Outcome(Status.OK, VIA, it.token, attempts=it.attempts,
                                      extra={"confirmed": True}))
        if res.failed is not None:
            it = res.failed
            it.result.resolve(self._outcome(it, Status.FAILED, name))
            if status == 8:
                self.token_events.emit(TokenEvent(TokenEventKind.INVALID, VIA, it.token,
                                                  reason=name))
        self.transmission_error.emit((name, res.failed.token if res.failed else None))
        if res.lost:
            self.cache_too_small.emit(res.lost)
        # sent after the failing one: discarded by the gateway, so sent again first
        self._front.extendleft(reversed(res.resend))

    def _ticker(self) -> None:
        while True:
            gevent.sleep(max(0.01, self.quiet_period / 4))
            now = time.monotonic()
            for _, it in list(self.cache.items):
                if not it.result.ready() and now - it.sent_at > self.quiet_period:
                    it.result.resolve(self._outcome(it, Status.OK))
