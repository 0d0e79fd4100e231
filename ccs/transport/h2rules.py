"""The HTTP/2 pool's decisions, pure: stream limits, what an unanswered stream became, retry
budgets and backoff. No sockets, no clock: callers hand in the time."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from ccs.backoff import added_jitter, exponential
from ccs.transport.h2request import FailureKind


@dataclass(frozen=True, slots=True)
class H2PoolConfig:
    """Where the server is and how the pool behaves (seconds unless said otherwise)."""

    host: str
    port: int
    server_hostname: str | None = None  # TLS name to verify; defaults to host
    connections: int = 2
    max_streams: int = 1000  # our own cap on streams in flight per connection
    connect_timeout: float = 10.0
    request_timeout: float = 30.0  # per request, from submit: queued, in flight and retries
    ping_interval: float = 60.0  # PING a connection that heard nothing this long
    ping_timeout: float = 10.0
    idle_timeout: float = 600.0  # close a connection unused this long
    retry_attempts: int = 3  # extra attempts after answers the provider judged retryable
    retry_seconds: float = 30.0  # no retry starts later than this after submit
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    reconnect_base: float = 0.5
    reconnect_cap: float = 30.0
    goaway_grace: float = 10.0  # wait for streams at or below a GOAWAY's last_stream_id
    max_reply_bytes: int = 64 * 1024  # kept of one answer body; the rest is read and dropped
    path_never_indexed: bool = False  # send :path as a never-indexed literal (APNs asks it)
    huffman: bool = False  # hpack's indexing, Huffman-coding encoder (smaller, slower); else
    # literals without indexing, cached per field (h2conn.LiteralEncoder)

    def __post_init__(self) -> None:
        if self.connections < 1 or self.max_streams < 1:
            raise ValueError("H2PoolConfig.connections and max_streams must be >= 1")
        if self.retry_attempts < 0:
            raise ValueError("H2PoolConfig.retry_attempts must be >= 0")
        for name in ("request_timeout", "connect_timeout", "ping_interval", "ping_timeout",
                     "idle_timeout", "backoff_base", "reconnect_base", "goaway_grace"):
            if getattr(self, name) <= 0:
                raise ValueError(f"H2PoolConfig.{name} must be > 0")
        if self.retry_seconds < 0:
            raise ValueError("H2PoolConfig.retry_seconds must be >= 0")


def stream_limit(server_limit: int | None, cap: int) -> int:
    """Streams we may have open: 1 until the server's SETTINGS came (None), then its
    MAX_CONCURRENT_STREAMS (0 = it set none), never above our own cap."""
    if server_limit is None:
        return 1
    if server_limit == 0:
        return cap
    return min(server_limit, cap)


def unanswered(stream_id: int, settings_seen: bool, goaway_last: int | None) -> FailureKind:
    """What a stream left without an answer on a closed connection became.

    NOT_SENT: the server never processed it (no SETTINGS ever came from it, or the stream is
    above a GOAWAY's last_stream_id), so it may go out again. UNKNOWN otherwise.
    """
    if not settings_seen:
        return FailureKind.NOT_SENT
    if goaway_last is not None and stream_id > goaway_last:
        return FailureKind.NOT_SENT
    return FailureKind.UNKNOWN


def backoff(attempt: int, base: float, cap: float, rnd: random.Random | None = None) -> float:
    """Exponential delay for the n-th consecutive failure (n >= 1), with up to 25% jitter."""
    return added_jitter(exponential(attempt, base, cap), (rnd or random).random(), 0.25)


def retry_delay(cfg: H2PoolConfig, answered: int, submitted: float, deadline: float, now: float,
                wanted: float | None, rnd: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after the `answered`-th retryable answer, or None when
    the budget (attempts, seconds since submit, the request deadline) is spent."""
    if answered > cfg.retry_attempts:
        return None
    delay = backoff(answered, cfg.backoff_base, cfg.backoff_cap, rnd) if wanted is None \
        else max(0.0, wanted)
    start = now + delay
    if start - submitted > cfg.retry_seconds or start >= deadline:
        return None
    return delay


def goaway_reason(debug: bytes | None) -> str | None:
    """A short reason from a GOAWAY's debug data: the `reason` of a JSON object (APNs), else
    the data itself when it is short printable text; None otherwise."""
    if not debug:
        return None
    if debug[:1] == b"{":
        try:
            doc = json.loads(debug)
        except (ValueError, RecursionError):
            return None
        reason = doc.get("reason") if isinstance(doc, dict) else None
        return reason[:200] if isinstance(reason, str) and reason else None
    text = debug[:200]
    if text.isascii() and all(32 <= b < 127 for b in text):
        return text.decode("ascii")
    return None
