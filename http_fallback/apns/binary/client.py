"""Client for the binary interface (retired 2021): enhanced frames, error responses, resends.

The gateway never confirms success. The rule used here:
- an error response naming X confirms everything written before X on that connection (`ok`,
  extra["confirmed"] True), fails X with the status's name (InvalidToken for 8, ...), and
  everything written after X goes out again on a new connection. For Shutdown (10) X is the
  last one that went through: it is confirmed too.
- a notification with no error for `quiet_period` seconds, counted from when its bytes were
  known to have reached the gateway's side (handed to our kernel and acknowledged by the peer's:
  a gateway that is not reading leaves them in our kernel) while the connection stayed open,
  resolves `ok` with extra["confirmed"] False.
- a connection that closes without an error response leaves its younger notifications
  `unknown` (sent, no answer will come).
Nothing unresolved leaves the sent-cache: when `cache_length` notifications are unresolved the
writer waits up to `cache_wait` seconds for room, then the cache doubles.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import struct
import termios
import time
from collections import deque
from typing import Any

import gevent
from gevent import ssl
from gevent.event import Event
from gevent.pool import Group
from gevent.queue import Empty, Queue

from ccs.outcome import Listeners, Outcome, SendResult, Status, TokenEvent, TokenEventKind
from ccs.provider import Provider
from ccs.transport.h2conn import TransportError, open_tls
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

VIA = "apns-binary"
BATCH = 64  # notifications per write at most
RETRYABLE = {1, 255}  # processing error, unknown: the gateway's trouble, not the notification's
# fields the binary interface has no place for: refused by name rather than dropped
_NO_FIELD = ("collapse_id", "push_type", "topic", "apns_id")
log = logging.getLogger(__name__)


def _context(config: ApnsConfig) -> ssl.SSLContext:
    if not config.uses_certificate:
        raise ValueError("the APNs binary interface needs a client certificate (CCS_APNS_CERT "
                         "and CCS_APNS_CERT_KEY, or CCS_APNS_PFX)")
    return certificate_context(
        ca_file=config.ca_file, cert_file=config.cert_file, key_file=config.key_for_cert,
        passphrase=config.passphrase, cert_data=config.cert_data, pfx_file=config.pfx_file,
        pfx_data=config.pfx_data)


def _unacked(sock: Any) -> int:
    """Bytes written but not yet acknowledged by the peer's kernel (0 where unsupported)."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        return struct.unpack("i", raw)[0]
    except (OSError, ValueError, AttributeError):
        return 0


def check_fields(n: Notification) -> None:
    """NotificationError naming a field the binary interface cannot carry."""
    for name in _NO_FIELD:
        if getattr(n, name) is not None:
            raise NotificationError(name, "the binary interface has no such field")
    if n.priority not in (None, 5, 10):
        raise NotificationError("priority", "the binary interface takes 10 or 5")


class _Item:
    __slots__ = ("token", "payload", "expiry", "priority", "command", "result", "attempts",
                 "redeliver")

    def __init__(self, token: str, payload: bytes, expiry: int, priority: int,
                 command: int) -> None:
        self.token, self.payload, self.expiry, self.priority = token, payload, expiry, priority
        self.command = command
        self.result = SendResult()
        self.attempts = 0
        self.redeliver = False  # resolved by its quiet period, then found discarded: send again

    def encode(self, ident: int) -> bytes:
        if self.command == 1:
            return encode_enhanced(ident, self.expiry, self.token, self.payload)
        return encode_frame(ident, self.expiry, self.token, self.payload, self.priority)


class _Conn:
    """One connection's state shared by its reader and writer."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.closed = Event()
        self.reason = ""
        self.closed_at = 0.0
        self.queued = 0  # bytes of notifications taken for writing
        self.flushed = 0  # bytes sendall has finished with (in our kernel or beyond)

    def end(self, reason: str) -> None:
        if not self.closed.is_set():
            self.reason, self.closed_at = reason, time.monotonic()
            self.closed.set()


class BinaryClient(Provider):
    """send(Notification) -> SendResult over the binary gateway (certificate auth)."""

    name = VIA

    def __init__(self, host: str, port: int, context: ssl.SSLContext,
                 server_hostname: str | None = None, cache_length: int = 1000,
                 cache_wait: float = 0.1, payload_limit: int = MAX_PAYLOAD, command: int = 2,
                 quiet_period: float = 1.0, connect_timeout: float = 10.0,
                 reconnect_base: float = 0.5, reconnect_cap: float = 30.0) -> None:
        super().__init__()
        if command not in (1, 2):
            raise ValueError("BinaryClient.command must be 1 (enhanced) or 2 (frame)")
        if quiet_period <= 0 or cache_wait < 0:
            raise ValueError("BinaryClient.quiet_period must be > 0 and cache_wait >= 0")
        self.host, self.port, self.context = host, port, context
        self.server_hostname = server_hostname
        self.cache = SentCache(cache_length)
        self.cache_wait = cache_wait
        self.payload_limit, self.command = payload_limit, command
        self.quiet_period, self.connect_timeout = quiet_period, connect_timeout
        self.reconnect_base, self.reconnect_cap = reconnect_base, reconnect_cap
        self.transmitted = Listeners()  # token hex, each write
        self.transmission_error = Listeners()  # (status name, token hex or None)
        self.cache_grew = Listeners()  # the new size
        self.connected = Listeners()
        self.disconnected = Listeners()  # reason
        self.counts = dict.fromkeys(("written", "resent", "confirmed", "quiet", "failed",
                                     "unknown", "late_errors", "errors", "connections",
                                     "cache_waits"), 0)
        self.last_error: str | None = None
        self._queue: Queue = Queue()
        self._front: deque[_Item] = deque()
        self._ids = itertools.count(1)
        self._room = Event()
        self._group = Group()
        self._conn: _Conn | None = None
        self._running = False

    @classmethod
    def from_config(cls, config: ApnsConfig, **kw: Any) -> BinaryClient:
        """The gateway from ApnsConfig (legacy_host/port, binary_*), with its certificate."""
        opts: dict[str, Any] = {
            "cache_length": config.binary_cache_length, "cache_wait": config.binary_cache_wait,
            "quiet_period": config.binary_quiet_period, "command": config.binary_command,
            "connect_timeout": config.connect_timeout, "reconnect_base": config.reconnect_base,
            "reconnect_cap": config.reconnect_cap, "server_hostname": config.server_hostname}
        opts.update(kw)
        return cls(config.legacy_host, config.legacy_port, _context(config), **opts)

    # -- Provider -------------------------------------------------------------------------
    def start(self) -> None:
        if not self._running:
            self._running = True
            self._group.spawn(self._run)

    def stop(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self._queue.qsize() or self._front
                                               or self.cache.pending):
            gevent.sleep(0.01)
        self._running = False
        self._group.kill(timeout=2)
        if self._conn is not None:  # killed while connected: _run could not close it
            self._conn.sock.close()
            self._conn = None
        for it in self.cache.clear():
            self._resolve(it, Status.UNKNOWN, "Stopped")
        for it in [*self._front, *self._queue.queue]:
            self._resolve(it, Status.FAILED, "Stopped", retryable=True)
        self._front.clear()
        while self._queue.qsize():
            self._queue.get_nowait()

    def healthy(self) -> bool:
        return self._running and (self._conn is not None or self.last_error is None)

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "queued": self._queue.qsize() + len(self._front),
                "unresolved": self.cache.pending, "cache_size": self.cache.size,
                "connected": self._conn is not None, "last_error": self.last_error}

    def send(self, message: Notification | dict[str, Any]) -> SendResult:
        """Queue one notification (or a dict of Notification's fields)."""
        device = message.get("device") if isinstance(message, dict) else message.device
        try:
            if isinstance(message, dict):
                from http_fallback.apns.client import _from_dict

                message = _from_dict(message)
            item = self._item(message)
        except (NotificationError, FrameError, ValueError, TypeError) as e:
            res = SendResult()
            res.resolve(Outcome(Status.FAILED, VIA, device, error="InvalidNotification",
                                description=str(e), attempts=0))
            return res
        if not self._running:
            item.result.resolve(Outcome(Status.FAILED, VIA, item.token, error="NotStarted",
                                        description="call start() first", retryable=True,
                                        attempts=0))
            return item.result
        self._queue.put(item)
        return item.result

    def _item(self, n: Notification) -> _Item:
        if not n.device:
            raise NotificationError("device", "missing device token")
        check_fields(n)
        payload = encode_payload(n.to_payload())
        if len(payload) > self.payload_limit:
            raise NotificationError("payload", f"{len(payload)} bytes exceeds the "
                                    f"{self.payload_limit}-byte binary interface limit")
        token = n.device.lower()
        encode_enhanced(0, 0, token, b"")  # checks the token: 32 bytes of hex
        return _Item(token, payload, n.expiry or 0, n.priority or 10, self.command)

    # -- outcomes -------------------------------------------------------------------------
    def _resolve(self, it: _Item, status: Status, error: str | None = None,
                 retryable: bool = False, confirmed: bool = False) -> None:
        extra = {"confirmed": confirmed} if status is Status.OK else {}
        if it.result.resolve(Outcome(status, VIA, it.token, error=error, retryable=retryable,
                                     attempts=it.attempts, extra=extra)):
            key = ("confirmed" if confirmed else "quiet") if status is Status.OK else str(status)
            self.counts[key] += 1

    def _settle(self, conn: _Conn, closed_at: float | None = None) -> None:
        """Resolve `ok` what has been on the gateway's side for the quiet period."""
        if closed_at is None:
            # what our kernel still holds unacknowledged has not reached the gateway; TLS adds
            # bytes, so this undercounts what has: never too early
            reached: int | None = max(0, conn.flushed - _unacked(conn.sock))
            now = time.monotonic()
        else:
            reached, now = None, closed_at
        done = self.cache.settle(reached, now, self.quiet_period)
        for it in done:
            self._resolve(it, Status.OK)
        if done:
            self._room.set()

    def _on_error(self, status: int, ident: int) -> None:
        name = STATUS.get(status, f"Status{status}")
        self.counts["errors"] += 1
        res = self.cache.on_error(ident, shutdown=status == 10)
        for it in res.accepted:  # the gateway works in order: all before it went through
            self._resolve(it, Status.OK, confirmed=True)
        named = res.failed or res.late
        if res.failed is not None:
            self._resolve(res.failed, Status.FAILED, name, retryable=status in RETRYABLE)
        if res.late is not None:
            self.counts["late_errors"] += 1
            log.warning("APNs binary: %s for identifier %d came after its quiet period (%.1f s);"
                        " it was reported ok", name, ident, self.quiet_period)
        if status == 8 and named is not None:
            self.token_events.emit(TokenEvent(TokenEventKind.INVALID, VIA, named.token,
                                              reason=name))
        self.transmission_error.emit((name, named.token if named else None))
        for it in res.resend:  # written after it: discarded by the gateway, so sent again
            it.redeliver = it.result.ready()
        self.counts["resent"] += len(res.resend)
        self._front.extendleft(reversed(res.resend))
        self._room.set()

    # -- connection -----------------------------------------------------------------------
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
                self.last_error = str(e)
                self.disconnected.emit(str(e))
                gevent.sleep(backoff(failures, self.reconnect_base, self.reconnect_cap))
                continue
            failures = 0
            self.last_error = None
            self.counts["connections"] += 1
            conn = self._conn = _Conn(sock)
            self.connected.emit(None)
            reader = self._group.spawn(self._reader, conn)
            writer = self._group.spawn(self._writer, conn)
            conn.closed.wait()
            writer.kill()
            reader.kill()
            sock.close()
            self._conn = None
            self._settle(conn, conn.closed_at)  # quiet long enough before the end: ok
            for it in self.cache.clear():  # younger: the gateway may or may not have it
                self._resolve(it, Status.UNKNOWN, "ConnectionLost")
            self._room.set()
            self.disconnected.emit(conn.reason)

    def _take(self, conn: _Conn) -> _Item | None:
        """The next notification to write, waiting for work and for room in the cache."""
        waited = False
        while not self.cache.has_room():
            if waited:
                self.cache_grew.emit(self.cache.grow())
                break
            self.counts["cache_waits"] += 1
            self._room.clear()
            self._room.wait(self.cache_wait)
            if conn.closed.is_set():
                return None
            waited = True
        it = self._front.popleft() if self._front else self._queue.get()
        if conn.closed.is_set():  # this connection ended while we waited
            self._front.appendleft(it)
            return None
        return it

    def _more(self) -> _Item | None:
        """One more notification if one is waiting now and the cache has room (no wait)."""
        if not self.cache.has_room():
            return None
        if self._front:
            return self._front.popleft()
        try:
            return self._queue.get_nowait()
        except Empty:
            return None

    def _writer(self, conn: _Conn) -> None:
        try:
            while not conn.closed.is_set():
                it = self._take(conn)
                chunks, batch = [], []
                while it is not None:
                    if not it.result.ready() or it.redeliver:
                        ident = next(self._ids)
                        data = it.encode(ident)
                        chunks.append(data)
                        it.attempts += 1
                        it.redeliver = False
                        conn.queued += len(data)
                        # cached before it is written: an error may name it at once
                        self.cache.add(ident, it, conn.queued)
                        batch.append(it)
                    it = self._more() if len(batch) < BATCH else None
                if not chunks:
                    continue
                conn.sock.sendall(b"".join(chunks))
                conn.flushed = conn.queued
                self.counts["written"] += len(batch)
                if self.transmitted:
                    for it in batch:
                        self.transmitted.emit(it.token)
                gevent.sleep(0)  # let the reader see an error response early
        except OSError as e:
            # the reader may still find the error response that explains it
            conn.closed.wait(self.connect_timeout)
            conn.end(f"write failed: {e}")

    def _reader(self, conn: _Conn) -> None:
        buf = b""
        reason = "closed by gateway"
        tick = max(0.01, self.quiet_period / 4)
        try:
            while len(buf) < ERROR_SIZE:
                data = None
                with gevent.Timeout(tick, False):
                    data = conn.sock.recv(64)
                if data is None:  # nothing to read for a while: settle what is quiet
                    self._settle(conn)
                    continue
                if not data:
                    break
                buf += data
        except OSError as e:
            reason = f"connection lost: {e}"
        if len(buf) >= ERROR_SIZE:
            try:
                self._on_error(*parse_error(buf))
                reason = f"error response {buf[1]} for {int.from_bytes(buf[2:6], 'big')}"
            except FrameError as e:  # not an error response: the stream cannot be trusted
                reason = f"unreadable answer from gateway: {e}"
                log.warning("APNs binary: %s", reason)
        elif buf:
            reason = f"unreadable answer from gateway: {len(buf)} bytes, then closed"
            log.warning("APNs binary: %s", reason)
        conn.end(reason)
