"""The APNs connection pool: N connection slots sharing one request queue, a ticker for
deadlines, PINGs and idle closes, and the retry rules for what comes back.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from gevent import ssl
from gevent.pool import Group
from gevent.queue import Queue
from h2.errors import ErrorCodes

from ccs.outcome import Listeners, Outcome, SendResult, Status, TokenEvent, TokenEventKind
from http_fallback.apns.auth import TokenSigner
from http_fallback.apns.config import ApnsConfig
from http_fallback.apns.connection import ApnsConnection
from http_fallback.apns.protocol import (
    DESCRIPTIONS,
    RETRY_CLASSES,
    Prepared,
    ReasonClass,
    Reply,
    backoff,
    classify,
)
from http_fallback.transport.h2conn import TransportError

log = logging.getLogger(__name__)
VIA = "apns"
_TOKEN_KINDS = {"Unregistered": TokenEventKind.UNREGISTERED,
                "ExpiredToken": TokenEventKind.UNREGISTERED,
                "BadDeviceToken": TokenEventKind.INVALID,
                "TooManyRequests": TokenEventKind.RATE_LIMITED}
_DRAIN_REASONS = {"Shutdown", "ServiceUnavailable"}


class Request:
    """One notification travelling through the pool; its `result` resolves exactly once."""

    __slots__ = ("prepared", "result", "attempts", "unprocessed", "deadline", "sent_at",
                 "r_headers", "r_body")

    def __init__(self, prepared: Prepared, result: SendResult, deadline: float) -> None:
        self.prepared = prepared
        self.result = result
        self.attempts = 0  # transmissions
        self.unprocessed = 0  # transmissions the server said it never processed
        self.deadline = deadline
        self.sent_at = 0.0
        self.r_headers: list[tuple[bytes, bytes]] | None = None
        self.r_body = b""


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    kind: str  # connected, disconnected, connect_failed, limit_changed
    number: int
    reason: str | None = None
    limit: int | None = None


class ApnsEvents:
    """Observers, like node-apn's connection events: nothing here slows the send path."""

    def __init__(self) -> None:
        self.connected = Listeners()  # ConnectionEvent
        self.disconnected = Listeners()  # ConnectionEvent
        self.connect_failed = Listeners()  # ConnectionEvent
        self.limit_changed = Listeners()  # ConnectionEvent with the new stream limit
        self.transmitted = Listeners()  # Prepared, each time it is written
        self.rejected = Listeners()  # Outcome of every rejection


class ApnsPool:
    def __init__(self, config: ApnsConfig, context: ssl.SSLContext, signer: TokenSigner | None,
                 events: ApnsEvents, token_events: Listeners,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.context = context
        self.signer = signer
        self.events = events
        self.token_events = token_events
        self.clock = clock
        self.queue: Queue = Queue()
        self.group = Group()
        self.connections: list[ApnsConnection | None] = [None] * config.connections
        self.waiting_retry: set[Request] = set()
        self.running = False
        self.last_error: str | None = None
        self.counts = {"sent": 0, "ok": 0, "failed": 0, "unknown": 0, "retried": 0,
                       "connects": 0, "connect_failures": 0}

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.running = True
        for i in range(self.config.connections):
            self.group.spawn(self._slot, i)
        self.group.spawn(self._ticker)

    def stop(self, timeout: float = 10.0) -> None:
        self.running = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._busy():
            gevent.sleep(0.01)
        conns = [c for c in self.connections if c is not None]
        for conn in conns:
            conn.close("stopping")
        gevent.sleep(0)
        self.group.kill(block=True, timeout=2)
        for conn in conns:  # serve() may have been cut short: settle what it left
            conn.group.kill(block=True, timeout=1)
            conn._settle()
        for req in list(self.waiting_retry):
            self._fail(req, "Stopped", "the client stopped before the retry", retryable=True)
        while self.queue.qsize():
            self._fail(self.queue.get_nowait(), "Stopped", "the client stopped before sending",
                       retryable=True)

    def _busy(self) -> bool:
        return bool(self.in_flight() or self.waiting_retry
                    or any(not r.result.ready() for r in self.queue.queue))

    def in_flight(self) -> int:
        return sum(len(c.streams) for c in self.connections if c is not None)

    def open_connections(self) -> list[ApnsConnection]:
        return [c for c in self.connections if c is not None and not c.closing]

    def _slot(self, number: int) -> None:
        failures = 0
        while self.running:
            try:
                failures = self._slot_once(number, failures)
            except Exception:  # a bug here must not silently end this slot
                log.exception("APNs connection slot %d failed", number)
                failures += 1
                gevent.sleep(backoff(failures, self.config.reconnect_base,
                                     self.config.reconnect_cap))

    def _slot_once(self, number: int, failures: int) -> int:
        """One connection's life: wait for work, connect, serve; returns the failure count."""
        cfg = self.config
        self.queue.peek()  # connect only when there is work
        if not self.running:
            return failures
        if self.queue.peek().result.ready():  # expired while waiting: not work
            self.queue.get_nowait()
            return failures
        conn = ApnsConnection(self, number)
        self.counts["connects"] += 1
        try:
            conn.connect()
        except TransportError as e:
            failures += 1
            self.last_error = str(e)
            self.counts["connect_failures"] += 1
            self.events.connect_failed.emit(ConnectionEvent("connect_failed", number, str(e)))
            log.warning("APNs connection %d failed (%d in a row): %s", number, failures, e)
            gevent.sleep(backoff(failures, cfg.reconnect_base, cfg.reconnect_cap))
            return failures
        self.connections[number] = conn
        self.events.connected.emit(ConnectionEvent("connected", number))
        try:
            conn.serve()
        finally:
            self.connections[number] = None
            self.events.disconnected.emit(
                ConnectionEvent("disconnected", number, conn.close_reason))
        if not conn.failed:
            return 0
        self.last_error = conn.close_reason
        failures = 1 if conn.answered else failures + 1
        gevent.sleep(backoff(failures, cfg.reconnect_base, cfg.reconnect_cap))
        return failures

    def _ticker(self) -> None:
        cfg = self.config
        interval = max(0.01, min(1.0, cfg.ping_interval / 4, cfg.request_timeout / 4,
                                 cfg.idle_timeout / 4))
        while True:
            gevent.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn is not None:
                    conn.tick(now)
            if self.queue.qsize():
                for req in list(self.queue.queue):
                    if now > req.deadline and not req.result.ready():
                        self.expire_queued(req)

    # -- the send path ------------------------------------------------------------------------
    def submit(self, prepared: Prepared, result: SendResult) -> None:
        self.queue.put(Request(prepared, result, time.monotonic() + self.config.request_timeout))

    def requeue(self, req: Request) -> None:
        self.waiting_retry.discard(req)
        if req.result.ready():
            return
        if not self.running:
            self._fail(req, "Stopped", "the client stopped before sending", retryable=True)
            return
        self.queue.put(req)

    def transmitted(self, reqs: list[Request], conn: ApnsConnection) -> None:
        self.counts["sent"] += len(reqs)
        if self.events.transmitted:
            for req in reqs:
                self.events.transmitted.emit(req.prepared)

    def limit_changed(self, conn: ApnsConnection) -> None:
        if self.events.limit_changed:
            self.events.limit_changed.emit(
                ConnectionEvent("limit_changed", conn.number, limit=conn.limit))

    def complete(self, req: Request, reply: Reply | int, conn: ApnsConnection) -> None:
        """A stream finished: a Reply, or the RST_STREAM error code."""
        conn.answered += 1
        if isinstance(reply, int):
            if reply == ErrorCodes.REFUSED_STREAM:
                self.retry_now(req, "RefusedStream", "the server refused the stream")
            else:
                self.unknown(req, f"StreamReset{reply}", "the server reset the stream")
            return
        prepared = req.prepared
        if reply.ok:
            self.counts["ok"] += 1
            req.result.resolve(Outcome(Status.OK, VIA, prepared.token,
                                       reply.apns_id or prepared.apns_id,
                                       attempts=req.attempts, extra={"status": 200}))
            return
        reason = reply.reason or f"HTTP{reply.status}"
        cls = classify(reason, reply.status)
        kind = _TOKEN_KINDS.get(reason)
        if kind is not None:
            self.token_events.emit(TokenEvent(kind, VIA, prepared.token, reason=reason,
                                              message_id=prepared.apns_id))
        if cls is ReasonClass.CONNECTION or reason in _DRAIN_REASONS:
            conn.drain(reason)
        if cls in RETRY_CLASSES and req.attempts - req.unprocessed <= self.config.retries:
            delay = 0.0
            if cls is not ReasonClass.CONNECTION:
                delay = backoff(req.attempts - req.unprocessed, self.config.backoff_base,
                                self.config.backoff_cap)
            if time.monotonic() + delay < req.deadline:
                self.counts["retried"] += 1
                self._later(req, delay)
                return
        extra: dict[str, Any] = {"status": reply.status, "class": cls.value}
        if reply.timestamp_ms is not None:
            extra["timestamp"] = datetime.datetime.fromtimestamp(reply.timestamp_ms / 1000,
                                                                 datetime.UTC)
        self.counts["failed"] += 1
        outcome = Outcome(Status.FAILED, VIA, prepared.token, reply.apns_id or prepared.apns_id,
                          error=reason, description=DESCRIPTIONS.get(reason, reason),
                          retryable=cls in RETRY_CLASSES, attempts=req.attempts, extra=extra)
        req.result.resolve(outcome)
        if self.events.rejected:
            self.events.rejected.emit(outcome)

    def _later(self, req: Request, delay: float) -> None:
        if delay <= 0:
            self.requeue(req)
            return
        self.waiting_retry.add(req)
        self.group.add(gevent.spawn_later(delay, self.requeue, req))

    def retry_now(self, req: Request, reason: str, description: str) -> None:
        """Not processed by the server (REFUSED_STREAM, above GOAWAY): send again elsewhere."""
        req.unprocessed += 1
        if time.monotonic() < req.deadline:
            self.counts["retried"] += 1
            self.requeue(req)
        else:
            self._fail(req, reason, description, retryable=True)

    def unknown(self, req: Request, reason: str, description: str | None = None) -> None:
        """Sent, and no answer will come: never re-sent, never dropped."""
        self.counts["unknown"] += 1
        req.result.resolve(Outcome(Status.UNKNOWN, VIA, req.prepared.token, req.prepared.apns_id,
                                   error=reason, description=description or DESCRIPTIONS.get(
                                       reason, "the connection closed before the answer"),
                                   attempts=req.attempts))

    def expire_queued(self, req: Request) -> None:
        self._fail(req, "Timeout", "not sent before the request deadline"
                   + (f" (last error: {self.last_error})" if self.last_error else ""),
                   retryable=True)

    def _fail(self, req: Request, reason: str, description: str, retryable: bool) -> None:
        self.waiting_retry.discard(req)
        if req.result.resolve(Outcome(Status.FAILED, VIA, req.prepared.token,
                                      req.prepared.apns_id, error=reason,
                                      description=description, retryable=retryable,
                                      attempts=req.attempts)):
            self.counts["failed"] += 1
