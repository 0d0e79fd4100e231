"""How FcmClient's requests travel: HTTP/2 on the shared pool (`ccs.transport.h2pool`)
when the server offers ALPN h2, else the keep-alive HTTP/1.1 pool.

Both report the same way, to FcmClient: `transport_answered(job, token, status, retry_after,
body)` for an HTTP answer, `transport_failed(job, description, sent, goaway)` when none came
(`sent`: it may have reached the server; `goaway`: on a connection the server sent GOAWAY on).
FCM's own rules (Retry-After, 401, backoff, ttl) stay in the client: the pool retries nothing
itself, but it does re-send what the server never processed (REFUSED_STREAM, streams above a
GOAWAY's last_stream_id) on any connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from gevent.lock import Semaphore

from ccs.transport.h2conn import TransportError, open_tls
from ccs.transport.h2pool import H2Pool
from ccs.transport.h2request import (
    FINAL,
    ConnectionInfo,
    FailureKind,
    H2Request,
    H2Response,
    TransportFailure,
    Verdict,
)
from ccs.transport.h2rules import H2PoolConfig
from ccs.transport.http11 import HttpClient, HttpError
from ccs.transport.tls import client_context

if TYPE_CHECKING:
    from http_fallback.fcm.config import FcmConfig

log = logging.getLogger(__name__)
H2 = "h2"
HTTP11 = "http/1.1"
# requests handed to the HTTP/2 pool per connection: more than FCM's 100 streams, so a stream
# that ends is refilled from the queue at once
QUEUED_PER_CONNECTION = 250
_CONTENT_TYPE = (b"content-type", b"application/json; charset=UTF-8")


class Reporter(Protocol):
    def transport_answered(self, job: Any, token: str, status: int, retry_after: str | None,
                           body: bytes) -> None: ...
    def transport_failed(self, job: Any, description: str, sent: bool, goaway: bool) -> None: ...


def choose_protocol(config: FcmConfig, timeout: float) -> str:
    """Ask the server by ALPN (h2, http/1.1) which protocol it speaks; HttpError when it
    cannot be reached."""
    parts = urlsplit(config.base_url)
    if parts.scheme != "https" or not config.http2:
        return HTTP11  # no h2c: cleartext (loopback only) stays on HTTP/1.1
    host, port = parts.hostname or "", parts.port or 443
    ctx = client_context(config.ca_file, alpn=[H2, HTTP11])
    try:
        sock = open_tls(host, port, ctx, host, timeout, alpn=None)
    except TransportError as e:
        raise HttpError("connect", f"cannot connect to {host}:{port}: {e}") from e
    chosen = sock.selected_alpn_protocol()
    sock.close()
    return H2 if chosen == H2 else HTTP11


class H2Sender:
    """FCM over the HTTP/2 pool: `send` never blocks beyond the in-flight cap."""

    protocol = H2

    def __init__(self, config: FcmConfig, path: str, report: Reporter) -> None:
        parts = urlsplit(config.base_url)
        host = parts.hostname or ""
        self.path = path.encode()
        self.report = report
        cfg = H2PoolConfig(host, parts.port or 443, connections=config.connections,
                           connect_timeout=config.connect_timeout,
                           request_timeout=config.timeout, retry_attempts=0)
        self.pool = H2Pool(cfg, client_context(config.ca_file, alpn=[H2]), self, name="fcm")
        self.slots = Semaphore(config.connections * QUEUED_PER_CONNECTION)
        self.pool.start()

    def wait_room(self) -> None:
        """Block while the pool holds as many requests as it should."""
        self.slots.acquire()

    def send(self, job: Any, token: str) -> None:
        """Hand one request to the pool (after wait_room)."""
        headers = [(b"authorization", f"Bearer {token}".encode()), _CONTENT_TYPE]
        self.pool.submit(H2Request(self.path, headers, job.body, tag=job, waiter=token))

    def stats(self) -> dict[str, Any]:
        return self.pool.stats()

    def close(self, timeout: float) -> None:
        self.pool.stop(timeout)

    # -- the pool's handler ---------------------------------------------------------------
    def request_headers(self, conn: ConnectionInfo) -> list[tuple[bytes, bytes]]:
        return []

    def judge(self, request: H2Request, response: H2Response) -> Verdict:
        return FINAL  # FCM's answers are judged by the client, which re-sends by its rules

    def finish(self, request: H2Request, result: H2Response | TransportFailure) -> None:
        self.slots.release()
        job, token = request.tag, request.waiter
        if isinstance(result, H2Response):
            retry_after = result.header(b"retry-after")
            self.report.transport_answered(
                job, token, result.status,
                retry_after.decode("latin-1") if retry_after else None, result.body)
        else:
            self.report.transport_failed(job, f"{result.reason}: {result.description}",
                                         result.kind is FailureKind.UNKNOWN, result.goaway)

    def connection_closed(self, conn: ConnectionInfo) -> None:
        pass


class H1Sender:
    """FCM over keep-alive HTTP/1.1: `send` blocks its worker for the exchange."""

    protocol = HTTP11

    def __init__(self, http: HttpClient, config: FcmConfig, path: str,
                 report: Reporter) -> None:
        self.pool = http.pool(config.base_url)
        self.path = path
        self.report = report
        self.concurrency = config.concurrency

    def wait_room(self) -> None:
        pass  # send() waits for a socket itself

    def send(self, job: Any, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}",
                   "Content-Type": "application/json; charset=UTF-8"}
        try:
            # FCM asks senders to retry; a resend on a stale connection is the same retry
            response = self.pool.request("POST", self.path, headers, job.body, idempotent=True)
        except HttpError as e:
            self.report.transport_failed(job, str(e), True, False)
            return
        self.report.transport_answered(job, token, response.status,
                                       response.headers.get("retry-after"), response.body)

    def stats(self) -> dict[str, Any]:
        pool = self.pool
        in_use = self.concurrency - pool._slots.counter
        return {"connections": [{"protocol": HTTP11}] * (len(pool._idle) + in_use),
                "connections_opened": pool.connections_opened}

    def close(self, timeout: float) -> None:
        pass  # the HttpClient it came from closes it
