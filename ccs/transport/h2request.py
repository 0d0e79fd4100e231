"""What a provider hands the HTTP/2 pool and what it gets back (pure data, no I/O).

A provider builds an `H2Request` (path, its own headers, body, an opaque `tag`), the pool sends
it and calls the provider's `H2Handler`: `judge` on every answer (final, or retry), `finish`
exactly once with an `H2Response` or a `TransportFailure`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class H2Request:
    """One request travelling through the pool; `finish` is called for it exactly once.

    `headers` are the provider's own (no pseudo-headers), names and values bytes. `attempts`
    counts transmissions, `unprocessed` those the server never processed (REFUSED_STREAM,
    above a GOAWAY's last_stream_id).
    """

    __slots__ = ("path", "headers", "body", "method", "tag", "waiter", "submitted", "deadline",
                 "attempts", "unprocessed", "answered", "sent_at", "done",
                 "r_headers", "r_body", "r_bytes", "body_sent", "last_response")

    def __init__(self, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                 tag: Any = None, waiter: Any = None, method: bytes = b"POST") -> None:
        self.path = path
        self.headers = headers
        self.body = body
        self.method = method
        self.tag = tag  # the provider's message; what `transmitted` observers see
        self.waiter = waiter  # the provider's handle for the result (e.g. a SendResult)
        self.submitted = 0.0  # monotonic, set by the pool
        self.deadline = 0.0  # monotonic, set by the pool
        self.attempts = 0
        self.unprocessed = 0
        self.answered = 0  # answers judged retryable so far
        self.sent_at = 0.0
        self.done = False
        self.r_headers: list[tuple[bytes, bytes]] | None = None
        self.r_body = b""
        self.r_bytes = 0
        self.body_sent = 0
        self.last_response: H2Response | None = None


@dataclass(frozen=True, slots=True)
class H2Response:
    """An answer: status (0 when missing or malformed), headers (lowercase bytes), body."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return self.headers.get(name)

    @classmethod
    def of(cls, req: H2Request) -> H2Response:
        """The answer gathered on `req`'s stream: a missing, malformed or repeated :status
        reads as 0 (h2's inbound header checks are off, see h2conn.client_config)."""
        status, seen = 0, 0
        hmap: dict[bytes, bytes] = {}
        for k, v in req.r_headers or ():
            if k == b":status":
                seen += 1
                status = int(v) if v.isdigit() and len(v) == 3 else 0
            else:
                hmap[k] = v
        return cls(status if seen == 1 else 0, hmap, req.r_body)


class FailureKind(StrEnum):
    UNKNOWN = "unknown"  # HEADERS went out: the server may have processed it
    NOT_SENT = "not_sent"  # never reached the server, or the server said it did not process it


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """No answer: `reason` is a short word (Timeout, GoAway, ConnectionClosed...)."""

    kind: FailureKind
    reason: str
    description: str
    goaway: bool = False  # UNKNOWN on a connection the server had sent GOAWAY on


@dataclass(frozen=True, slots=True)
class Verdict:
    """The provider's decision on one answer.

    retry: send again (after `delay`, or the pool's backoff with jitter when None) while the
    request's budget lasts, else finish with this answer. drain: stop opening streams on this
    connection and close it once its streams are done (the reason is logged and reported).
    """

    retry: bool = False
    delay: float | None = None
    drain: str | None = None


FINAL = Verdict()
RETRY = Verdict(retry=True)


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What a provider may know about one connection (for per-connection credentials)."""

    number: int  # the slot, 0..connections-1
    serial: int  # unique over the pool's life
    protocol: str  # ALPN result, e.g. "h2"


class H2Handler(Protocol):
    """The provider's side of the pool. Called from pool greenlets; must not block long,
    except `request_headers`, which runs in the connection's writer outside the h2 lock."""

    def request_headers(self, conn: ConnectionInfo) -> list[tuple[bytes, bytes]]:
        """Headers added to every request written on `conn` (e.g. authorization). Raising
        closes the connection as failed (the pool reconnects with backoff) and puts its
        requests back in the queue."""
        ...

    def judge(self, request: H2Request, response: H2Response) -> Verdict:
        """Decide on an answer: FINAL, RETRY, or a Verdict with a delay or drain."""
        ...

    def finish(self, request: H2Request, result: H2Response | TransportFailure) -> None:
        """The request's end, exactly once: its final answer or why there is none."""
        ...

    def connection_closed(self, conn: ConnectionInfo) -> None:
        """Forget per-connection state kept for `conn`."""
        ...


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    kind: str  # connected, disconnected, connect_failed, limit_changed, goaway
    number: int
    reason: str | None = None
    limit: int | None = None
    serial: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


Conn = Any  # an H2ClientConnection (h2client imports this module, not the reverse)


class ConnectionOwner(Protocol):
    """How a connection reports; the pool implements it."""

    def request_headers(self, conn: Conn) -> list[tuple[bytes, bytes]]: ...
    def transmitted(self, conn: Conn, reqs: list[H2Request]) -> None: ...
    def answered(self, conn: Conn, req: H2Request, resp: H2Response) -> None: ...
    def reset(self, conn: Conn, req: H2Request, code: int) -> None: ...
    def unsent(self, conn: Conn, reqs: list[H2Request]) -> None: ...
    def unprocessed(self, conn: Conn, reqs: list[H2Request], reason: str,
                    description: str) -> None: ...
    def lost(self, conn: Conn, req: H2Request, reason: str,
             description: str) -> None: ...
    def limit_changed(self, conn: Conn) -> None: ...
    def goaway(self, conn: Conn) -> None: ...
