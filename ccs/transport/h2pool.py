"""H2Pool: a protocol-agnostic pool of client HTTP/2 connections on gevent (APNs, FCM HTTP v1).

How a provider uses it:

    pool = H2Pool(H2PoolConfig(host, port, ...), ssl_context, handler, events=H2Events())
    pool.start()
    pool.submit(H2Request(path, headers, body, tag=..., waiter=...))   # never blocks
    ...
    pool.stop(timeout)   # every submitted request has been finished by then

`handler` (see h2request.H2Handler) is the provider's side: `request_headers(conn)` adds
per-connection headers (authorization), `judge(req, response)` returns FINAL, RETRY or a
Verdict (delay, drain), and `finish(req, result)` is called exactly once per request with the
final H2Response or a TransportFailure (UNKNOWN: it may have reached the server; NOT_SENT: it
did not, or the server said it did not process it). The pool owns everything below that:
  - streams open only while fewer than the server's acknowledged MAX_CONCURRENT_STREAMS (1
    until its SETTINGS); a lowered limit queues requests, it never fails them;
  - REFUSED_STREAM and streams above a GOAWAY's last_stream_id go back to the queue for any
    connection; streams at or below it are waited for `goaway_grace`, then UNKNOWN; the slot
    opens its next connection at once while the old one finishes them;
  - bodies follow the flow-control windows; received data is acknowledged;
  - PING when nothing was heard for `ping_interval`; idle connections close after
    `idle_timeout`; reconnects back off with jitter; a connection with streams in flight is
    never closed by us (except at its request deadline or stop());
  - retries the provider asks for wait backoff + jitter and stop at `retry_attempts` or
    `retry_seconds` (then `finish` gets the last answer);
  - every request ends by `request_timeout` after submit (queued: NOT_SENT Timeout, or its last
    retryable answer; in flight: RST_STREAM and UNKNOWN Timeout).
Observers: `events` (connected, disconnected, connect_failed, limit_changed, goaway: each a
ConnectionEvent; transmitted: the request's tag). `stats()` gives counters and, per connection,
its protocol (ALPN), stream limit, open streams and answers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from gevent import ssl
from gevent.pool import Group
from h2.errors import ErrorCodes

from ccs.outcome import Listeners
from ccs.transport.h2client import H2ClientConnection
from ccs.transport.h2conn import TransportError
from ccs.transport.h2request import (
    ConnectionEvent,
    FailureKind,
    H2Handler,
    H2Request,
    H2Response,
    TransportFailure,
)
from ccs.transport.h2rules import H2PoolConfig, backoff, retry_delay
from ccs.transport.queue import WorkQueue

log = logging.getLogger(__name__)


class H2Events:
    """Observers (nothing here slows the send path when nobody listens)."""

    def __init__(self) -> None:
        self.connected = Listeners()  # ConnectionEvent
        self.disconnected = Listeners()  # ConnectionEvent with the close reason
        self.connect_failed = Listeners()  # ConnectionEvent with the error
        self.limit_changed = Listeners()  # ConnectionEvent with the new stream limit
        self.goaway = Listeners()  # ConnectionEvent with the reason and last_stream_id
        self.transmitted = Listeners()  # the request's tag, each time it is written


class H2Pool:
    def __init__(self, cfg: H2PoolConfig, context: ssl.SSLContext, handler: H2Handler,
                 events: H2Events | None = None, name: str = "http2") -> None:
        self.cfg = cfg
        self.context = context
        self.handler = handler
        self.events = events or H2Events()
        self.name = name
        self.queue = WorkQueue()
        self.group = Group()
        self.connections: list[H2ClientConnection | None] = [None] * cfg.connections
        self.draining: set[H2ClientConnection] = set()  # retired, finishing their streams
        self.waiting_retry: set[H2Request] = set()
        self.running = False
        self.last_error: str | None = None
        self.counts = {"sent": 0, "retried": 0, "requeued": 0, "connects": 0,
                       "connect_failures": 0, "goaways": 0, "refused": 0}
        self._serial = 0
        self._owner = _Owner(self)

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.running = True
        for i in range(self.cfg.connections):
            self.group.spawn(self._slot, i)
        self.group.spawn(self._ticker)

    def stop(self, timeout: float = 10.0) -> None:
        """Wait up to `timeout` for the work to finish, then close and finish the rest."""
        self.running = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.busy():
            gevent.sleep(0.01)
        conns = self._live()
        for conn in conns:
            conn.close("stopping")
        gevent.sleep(0)
        self.group.kill(block=True, timeout=2)
        for conn in conns:  # serve() may have been cut short: settle what it left
            conn.group.kill(block=True, timeout=1)
            conn.settle()
        stopped = TransportFailure(FailureKind.NOT_SENT, "Stopped",
                                   "the client stopped before sending")
        for req in list(self.waiting_retry):
            self._finish(req, req.last_response or stopped)
        for req in self.queue.drain():
            self._finish(req, req.last_response or stopped)

    def busy(self) -> bool:
        return bool(self.in_flight() or self.waiting_retry or self.queue.qsize())

    def in_flight(self) -> int:
        return sum(len(c.streams) for c in self._live())

    def open_connections(self) -> list[H2ClientConnection]:
        return [c for c in self.connections if c is not None and not c.closing]

    def stats(self) -> dict[str, Any]:
        conns = self._live()
        return {**self.counts, "queued": self.queue.qsize(), "in_flight": self.in_flight(),
                "waiting_retry": len(self.waiting_retry),
                "connections": [c.stats() for c in conns], "last_error": self.last_error}

    # -- the send path ------------------------------------------------------------------------
    def submit(self, req: H2Request) -> None:
        """Queue a request; `handler.finish` will be called for it exactly once."""
        now = time.monotonic()
        req.submitted = now
        req.deadline = now + self.cfg.request_timeout
        if not self.running:
            self._finish(req, TransportFailure(FailureKind.NOT_SENT, "NotStarted",
                                               "the pool is not running"))
            return
        self.queue.put(req)

    def _finish(self, req: H2Request, result: H2Response | TransportFailure) -> None:
        if req.done:
            return
        req.done = True
        self.waiting_retry.discard(req)
        self.handler.finish(req, result)

    def _requeue(self, req: H2Request) -> None:
        self.waiting_retry.discard(req)
        if req.done:
            return
        if not self.running:
            self._finish(req, req.last_response or TransportFailure(
                FailureKind.NOT_SENT, "Stopped", "the client stopped before sending"))
            return
        self.queue.put(req)

    def _retry(self, req: H2Request, resp: H2Response, wanted: float | None) -> bool:
        """Schedule another attempt within the budget; False when it is spent."""
        req.answered += 1
        delay = retry_delay(self.cfg, req.answered, req.submitted, req.deadline,
                            time.monotonic(), wanted)
        if delay is None:
            return False
        self.counts["retried"] += 1
        if delay <= 0:
            self.queue.put(req)
        else:
            self.waiting_retry.add(req)
            self.group.add(gevent.spawn_later(delay, self._requeue, req))
        return True

    # -- connections ----------------------------------------------------------------------------
    def _slot(self, number: int) -> None:
        failures = 0
        while self.running:
            try:
                failures = self._slot_once(number, failures)
            except Exception:  # a bug here must not silently end this slot
                log.exception("%s connection slot %d failed", self.name, number)
                failures += 1
                gevent.sleep(backoff(failures, self.cfg.reconnect_base, self.cfg.reconnect_cap))

    def _slot_once(self, number: int, failures: int) -> int:
        """One connection's life: wait for work, connect, serve; returns the failure count."""
        cfg = self.cfg
        if not self.queue.wait(timeout=1.0) or not self.running:
            return failures  # connect only when there is work
        self._serial += 1
        conn = H2ClientConnection(self._owner, self.queue, cfg, self.context, number,
                                  self._serial)
        self.counts["connects"] += 1
        try:
            conn.connect()
        except TransportError as e:
            failures += 1
            self.last_error = str(e)
            self.counts["connect_failures"] += 1
            self.events.connect_failed.emit(ConnectionEvent("connect_failed", number, str(e),
                                                            serial=conn.serial))
            log.warning("%s connection %d failed (%d in a row): %s", self.name, number,
                        failures, e)
            gevent.sleep(backoff(failures, cfg.reconnect_base, cfg.reconnect_cap))
            return failures
        self.connections[number] = conn
        self.events.connected.emit(ConnectionEvent("connected", number, serial=conn.serial))
        serving = self.group.spawn(conn.serve)
        gevent.wait([conn.retired, conn.closed], count=1)
        self.connections[number] = None
        if not conn.closed.is_set():
            # a GOAWAY or a drain: the old connection finishes its streams on its own while
            # this slot opens the next one for the requests it sent back
            self.draining.add(conn)
            serving.link(lambda _g: self._gone(conn))
            if not conn.failed:
                return 0
            failures += 1  # a GOAWAY with an error code: back off before the next one
            gevent.sleep(backoff(failures, cfg.reconnect_base, cfg.reconnect_cap))
            return failures
        serving.join()
        self._gone(conn)
        if not conn.failed:
            return 0
        self.last_error = conn.close_reason
        failures = 1 if conn.answered else failures + 1
        gevent.sleep(backoff(failures, cfg.reconnect_base, cfg.reconnect_cap))
        return failures

    def _gone(self, conn: H2ClientConnection) -> None:
        self.draining.discard(conn)
        self.handler.connection_closed(conn.info)
        self.events.disconnected.emit(ConnectionEvent(
            "disconnected", conn.number, conn.close_reason, serial=conn.serial,
            extra={"answered": conn.answered, "opened": conn.opened}))

    def _live(self) -> list[H2ClientConnection]:
        return [c for c in self.connections if c is not None] + list(self.draining)

    def _ticker(self) -> None:
        cfg = self.cfg
        interval = max(0.01, min(1.0, cfg.ping_interval / 4, cfg.request_timeout / 4,
                                 cfg.idle_timeout / 4, cfg.goaway_grace / 4))
        while True:
            gevent.sleep(interval)
            now = time.monotonic()
            for conn in self._live():
                conn.tick(now)
            if self.queue.qsize():
                for req in self.queue.remove_if(lambda r, t=now: t > r.deadline or r.done):
                    self._finish(req, req.last_response or self._timeout())

    def _timeout(self) -> TransportFailure:
        last = f" (last error: {self.last_error})" if self.last_error else ""
        return TransportFailure(FailureKind.NOT_SENT, "Timeout",
                                "not sent before the request deadline" + last)


class _Owner:
    """The pool's side of ConnectionOwner: what its connections report, and nothing else."""

    __slots__ = ("pool",)

    def __init__(self, pool: H2Pool) -> None:
        self.pool = pool

    def request_headers(self, conn: H2ClientConnection) -> list[tuple[bytes, bytes]]:
        return self.pool.handler.request_headers(conn.info)

    def transmitted(self, conn: H2ClientConnection, reqs: list[H2Request]) -> None:
        pool = self.pool
        pool.counts["sent"] += len(reqs)
        if pool.events.transmitted:
            for req in reqs:
                pool.events.transmitted.emit(req.tag)

    def answered(self, conn: H2ClientConnection, req: H2Request, resp: H2Response) -> None:
        pool = self.pool
        if req.done:
            return
        verdict = pool.handler.judge(req, resp)
        if verdict.drain:
            conn.drain(verdict.drain)
        if verdict.retry:
            req.last_response = resp
            if pool._retry(req, resp, verdict.delay):
                return
        pool._finish(req, resp)

    def reset(self, conn: H2ClientConnection, req: H2Request, code: int) -> None:
        if code == ErrorCodes.REFUSED_STREAM:
            self.pool.counts["refused"] += 1
            self.unprocessed(conn, [req], "RefusedStream", "the server refused the stream")
        else:
            self.lost(conn, req, f"StreamReset{code}", "the server reset the stream")

    def unsent(self, conn: H2ClientConnection, reqs: list[H2Request]) -> None:
        pool = self.pool
        if pool.running:
            pool.queue.put_front([r for r in reqs if not r.done])
        else:
            for req in reqs:
                pool._requeue(req)

    def unprocessed(self, conn: H2ClientConnection, reqs: list[H2Request], reason: str,
                    description: str) -> None:
        """Written, but the server says it did not process them: they go out again."""
        pool = self.pool
        now = time.monotonic()
        again = []
        for req in reqs:
            req.unprocessed += 1
            if req.done:
                continue
            if now < req.deadline and pool.running:
                again.append(req)
            else:
                pool._finish(req, req.last_response or TransportFailure(
                    FailureKind.NOT_SENT, reason, description))
        pool.counts["requeued"] += len(again)
        pool.queue.put_front(again)

    def lost(self, conn: H2ClientConnection, req: H2Request, reason: str,
             description: str) -> None:
        self.pool._finish(req, TransportFailure(FailureKind.UNKNOWN, reason, description,
                                                goaway=conn.goaway_last is not None))

    def limit_changed(self, conn: H2ClientConnection) -> None:
        events = self.pool.events
        if events.limit_changed:
            events.limit_changed.emit(ConnectionEvent("limit_changed", conn.number,
                                                      limit=conn.limit, serial=conn.serial))

    def goaway(self, conn: H2ClientConnection) -> None:
        self.pool.counts["goaways"] += 1
        self.pool.events.goaway.emit(ConnectionEvent(
            "goaway", conn.number, conn.close_reason, serial=conn.serial,
            extra={"last_stream_id": conn.goaway_last}))
