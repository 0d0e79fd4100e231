"""APNs on the shared HTTP/2 pool: the provider's side (H2Handler) of ccs.transport.

Per-connection JWTs, the reason classes deciding retries, and outcomes for each notification.
Everything about connections, streams and budgets lives in the pool.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

from hpack import NeverIndexedHeaderTuple

from ccs.outcome import Listeners, Outcome, SendResult, Status, TokenEvent, TokenEventKind
from ccs.transport.h2pool import H2Events
from ccs.transport.h2request import (
    FINAL,
    RETRY,
    ConnectionInfo,
    FailureKind,
    H2Request,
    H2Response,
    TransportFailure,
    Verdict,
)
from http_fallback.apns.auth import TokenSigner
from http_fallback.apns.config import ApnsConfig
from http_fallback.apns.protocol import (
    DESCRIPTIONS,
    RETRY_CLASSES,
    Prepared,
    ReasonClass,
    parse_reply,
    token_needs_refresh,
)
from http_fallback.apns.protocol import classify as classify_reason

VIA = "apns"
_TOKEN_KINDS = {"Unregistered": TokenEventKind.UNREGISTERED,
                "ExpiredToken": TokenEventKind.UNREGISTERED,
                "BadDeviceToken": TokenEventKind.INVALID,
                "TooManyRequests": TokenEventKind.RATE_LIMITED}
_DRAIN_REASONS = {"Shutdown"}  # a 503 alone is retried on the same connection: no churn


class ApnsEvents(H2Events):
    """The pool's connection events, plus every rejection (node-apn style observers)."""

    def __init__(self) -> None:
        super().__init__()
        self.rejected = Listeners()  # Outcome of every final rejection


def to_request(prepared: Prepared, result: SendResult) -> H2Request:
    return H2Request(prepared.path, prepared.headers, prepared.body, tag=prepared,
                     waiter=result)


class ApnsHandler:
    """Decides on APNs answers and resolves each notification's SendResult exactly once."""

    def __init__(self, config: ApnsConfig, signer: TokenSigner | None, events: ApnsEvents,
                 token_events: Listeners, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.signer = signer
        self.events = events
        self.token_events = token_events
        self.clock = clock
        self.tokens: dict[int, tuple[list[tuple[bytes, bytes]], float]] = {}
        self.counts = {"ok": 0, "failed": 0, "unknown": 0}

    def request_headers(self, conn: ConnectionInfo) -> list[tuple[bytes, bytes]]:
        """One provider token per connection, replaced after token_refresh (>= 20 min)."""
        if self.signer is None:
            return []
        now = self.clock()
        held = self.tokens.get(conn.serial)
        if held is None or token_needs_refresh(held[1], now, self.config.token_refresh):
            token = b"bearer " + self.signer.make(now).encode()
            held = ([NeverIndexedHeaderTuple(b"authorization", token)], now)
            self.tokens[conn.serial] = held
        return held[0]

    def connection_closed(self, conn: ConnectionInfo) -> None:
        self.tokens.pop(conn.serial, None)

    def judge(self, req: H2Request, resp: H2Response) -> Verdict:
        if resp.status == 200:
            return FINAL
        reply = parse_reply(resp.status, resp.headers, resp.body)
        reason = reply.reason or f"HTTP{resp.status}"
        kind = _TOKEN_KINDS.get(reason)
        if kind is not None:
            self.token_events.emit(TokenEvent(kind, VIA, req.tag.token, reason=reason,
                                              message_id=req.tag.apns_id))
        cls = classify_reason(reason, resp.status)
        if cls is ReasonClass.CONNECTION:
            return Verdict(retry=True, delay=0.0, drain=reason)
        if reason in _DRAIN_REASONS:
            return Verdict(retry=True, drain=reason)
        return RETRY if cls in RETRY_CLASSES else FINAL

    def finish(self, req: H2Request, result: H2Response | TransportFailure) -> None:
        prepared: Prepared = req.tag
        if isinstance(result, TransportFailure):
            if result.kind is FailureKind.UNKNOWN:
                self.counts["unknown"] += 1
                status = Status.UNKNOWN
            else:
                self.counts["failed"] += 1
                status = Status.FAILED
            req.waiter.resolve(Outcome(
                status, VIA, prepared.token, prepared.apns_id, error=result.reason,
                description=result.description,
                retryable=status is Status.FAILED, attempts=req.attempts))
            return
        reply = parse_reply(result.status, result.headers, result.body)
        if reply.ok:
            self.counts["ok"] += 1
            req.waiter.resolve(Outcome(Status.OK, VIA, prepared.token,
                                       reply.apns_id or prepared.apns_id,
                                       attempts=req.attempts, extra={"status": 200}))
            return
        reason = reply.reason or f"HTTP{reply.status}"
        cls = classify_reason(reason, reply.status)
        extra: dict[str, Any] = {"status": reply.status, "class": cls.value}
        if reply.timestamp_ms is not None:
            extra["timestamp"] = datetime.datetime.fromtimestamp(reply.timestamp_ms / 1000,
                                                                 datetime.UTC)
        self.counts["failed"] += 1
        outcome = Outcome(Status.FAILED, VIA, prepared.token, reply.apns_id or prepared.apns_id,
                          error=reason, description=DESCRIPTIONS.get(reason, reason),
                          retryable=cls in RETRY_CLASSES, attempts=req.attempts, extra=extra)
        req.waiter.resolve(outcome)
        if self.events.rejected:
            self.events.rejected.emit(outcome)
