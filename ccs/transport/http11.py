"""A small keep-alive HTTP/1.1 client on gevent sockets: one pool per origin, TLS always verified.

Retry rule for a stale keep-alive connection: a request is re-sent once, on a fresh connection,
only when (1) the connection was reused from the idle pool, (2) it failed before a single byte of
the response arrived, and (3) the request is safe to repeat: its method is idempotent (GET, HEAD,
PUT, DELETE, OPTIONS, TRACE) or the caller passed ``idempotent=True``. Idle sockets that are
readable (closed by the server, or holding stray bytes) are dropped before reuse, so most stale
connections are never written to at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent import socket, ssl
from gevent.lock import BoundedSemaphore
from gevent.monkey import get_original

from ccs.transport.tls import client_context

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_RECV = 65536
# a zero-timeout poll never blocks; gevent's select would also yield to the hub each time
_select = get_original("select", "select")


class HttpError(Exception):
    """The exchange failed: `kind` says how (refused, connect, tls, reset, closed, timeout,
    malformed, too_large). Messages name the origin only, never headers or bodies."""

    def __init__(self, kind: str, message: str, *, response_started: bool = False) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.response_started = response_started


class Headers(Mapping[str, str]):
    """Response headers with case-insensitive lookup; repeated fields are joined with ", "."""

    __slots__ = ("_items",)

    def __init__(self, pairs: list[tuple[str, str]] | None = None) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in pairs or ():
            key = name.lower()
            if key in self._items:
                value = self._items[key][1] + ", " + value
            self._items[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str] = field(default_factory=Headers)
    body: bytes = b""

    def json(self) -> Any:
        """The body decoded as JSON; raises ValueError when it is not JSON."""
        return json.loads(self.body)


class _Connection:
    """One socket to the origin with a read buffer; used by one greenlet at a time."""

    __slots__ = ("sock", "buf", "received", "idle_since")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.received = 0  # response bytes read for the current exchange
        self.idle_since = 0.0

    def fill(self) -> None:
        data = self.sock.recv(_RECV)
        if not data:
            raise HttpError("closed", "server closed the connection",
                            response_started=self.received > 0)
        self.received += len(data)
        self.buf += data

    def usable(self, idle_timeout: float) -> bool:
        """False when the server has closed it (or sent stray bytes) or it idled too long."""
        if self.buf or time.monotonic() - self.idle_since > idle_timeout:
            return False
        try:
            readable, _, _ = _select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _check_token(value: str, what: str) -> None:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{what} must not contain CR, LF or NUL")


class HttpPool:
    """Keep-alive connections to ONE origin (scheme, host, port); at most `max_connections`."""

    def __init__(self, origin: str, *, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, max_connections: int = 100,
                 connect_timeout: float = 10.0, timeout: float = 30.0,
                 idle_timeout: float = 60.0,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 server_hostname: str | None = None) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"origin must be http(s)://host[:port], got {origin!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        default_port = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.origin = f"{self.scheme}://{self.host_header}"
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.max_response_bytes = max_response_bytes
        self.server_hostname = server_hostname or self.host
        self._ctx = (client_context(ca_file, cert_file=cert_file, key_file=key_file)
                     if self.scheme == "https" else None)
        self._slots = BoundedSemaphore(max_connections)
        self._idle: list[_Connection] = []
        self._closed = False
        self.connections_opened = 0

    def __repr__(self) -> str:
        return f"HttpPool({self.origin!r}, idle={len(self._idle)})"

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> _Connection:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except ConnectionRefusedError as e:
            raise HttpError("refused", f"connection refused by {self.origin}") from e
        except (TimeoutError, socket.timeout) as e:
            raise HttpError("timeout", f"connect to {self.origin} timed out") from e
        except OSError as e:
            raise HttpError("connect", f"cannot connect to {self.origin}: {e.strerror or e}") from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ctx is not None:
                sock = self._ctx.wrap_socket(sock, server_hostname=self.server_hostname)
            sock.settimeout(None)  # the whole exchange runs under one gevent.Timeout
        except ssl.SSLError as e:
            sock.close()
            raise HttpError("tls", f"TLS with {self.origin} failed: {e.reason or e}") from e
        except (TimeoutError, socket.timeout) as e:
            sock.close()
            raise HttpError("timeout", f"TLS handshake with {self.origin} timed out") from e
        except OSError as e:
            sock.close()
            raise HttpError("connect", f"cannot connect to {self.origin}: {e}") from e
        self.connections_opened += 1
        return _Connection(sock)

    def _checkout(self) -> tuple[_Connection, bool]:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable(self.idle_timeout):
                return conn, True
            conn.close()
        return self._connect(), False

    # -- requests ----------------------------------------------------------------------------

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None,
                body: bytes = b"", timeout: float | None = None,
                idempotent: bool | None = None) -> HttpResponse:
        """Send one request and read the whole response; raises HttpError on failure."""
        if self._closed:
            raise HttpError("closed", f"pool for {self.origin} is closed")
        method = method.upper()
        head = self._encode_head(method, path, headers, body)
        safe = method in IDEMPOTENT if idempotent is None else idempotent
        limit = self.timeout if timeout is None else timeout
        timer = gevent.Timeout(limit)
        timer.start()
        try:
            with self._slots:
                conn, reused = self._checkout()
                try:
                    return self._exchange(conn, method, head, body)
                except HttpError as e:
                    if not (reused and safe and not e.response_started):
                        raise
                conn = self._connect()
                return self._exchange(conn, method, head, body)
        except gevent.Timeout as e:
            if e is not timer:
                raise
            raise HttpError("timeout", f"no complete answer from {self.origin} "
                                       f"within {limit:g}s") from None
        finally:
            timer.close()

    def _encode_head(self, method: str, path: str, headers: Mapping[str, str] | None,
                     body: bytes) -> bytes:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        _check_token(method + path, "method and path")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host_header}"]
        given = {k.lower() for k in headers or ()}
        for name, value in (headers or {}).items():
            _check_token(name + str(value), "header")
            lines.append(f"{name}: {value}")
        if "content-length" not in given and (body or method in ("POST", "PUT", "PATCH")):
            lines.append(f"Content-Length: {len(body)}")
        if "user-agent" not in given:
            lines.append("User-Agent: ccs-gateway")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _exchange(self, conn: _Connection, method: str, head: bytes, body: bytes) -> HttpResponse:
        conn.received = 0
        try:
            conn.sock.sendall(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.sock.sendall(body)
            while True:
                response, keep = self._read_response(conn, method)
                if response.status >= 200 or response.status == 101:
                    break  # 1xx interim answers are skipped
        except HttpError:
            conn.close()
            raise
        except ssl.SSLError as e:
            conn.close()
            raise HttpError("tls", f"TLS error with {self.origin}: {e.reason or e}",
                            response_started=conn.received > 0) from e
        except OSError as e:
            conn.close()
            raise HttpError("reset", f"connection to {self.origin} failed: {e.strerror or e}",
                            response_started=conn.received > 0) from e
        except BaseException:
            conn.close()  # a timeout or kill mid-exchange leaves the socket unusable
            raise
        if keep and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        return response

    def _read_response(self, conn: _Connection, method: str) -> tuple[HttpResponse, bool]:
        end = conn.buf.find(b"\r\n\r\n")
        while end < 0:
            if len(conn.buf) > MAX_HEADER_BYTES:
                raise HttpError("too_large", f"response head from {self.origin} too large",
                                response_started=True)
            conn.fill()
            end = conn.buf.find(b"\r\n\r\n", max(0, len(conn.buf) - _RECV - 3))
        raw = bytes(conn.buf[:end])
        del conn.buf[:end + 4]
        lines = raw.decode("latin-1").split("\r\n")
        version, status = self._status_line(lines[0])
        pairs = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise HttpError("malformed", f"bad header line from {self.origin}",
                                response_started=True)
            pairs.append((name, value.strip()))
        headers = Headers(pairs)
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep = "close" not in tokens and (version == "HTTP/1.1" or "keep-alive" in tokens)
        if method == "HEAD" or status < 200 or status in (204, 304):
            return HttpResponse(status, headers, b""), keep
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return HttpResponse(status, headers, self._read_chunked(conn)), keep
        if "content-length" in headers:
            text = headers["content-length"]
            # digits only: int() would also take "+5", " 5", "5_0" and other scripts' digits
            length = int(text) if text.isascii() and text.isdigit() and len(text) < 20 else -1
            if length < 0:
                raise HttpError("malformed", f"bad Content-Length from {self.origin}",
                                response_started=True)
            return HttpResponse(status, headers, self._read_exact(conn, length)), keep
        return HttpResponse(status, headers, self._read_to_close(conn)), False

    def _status_line(self, line: str) -> tuple[str, int]:
        parts = line.split(" ", 2)
        code = parts[1] if len(parts) > 1 else ""
        # three ASCII digits (str.isdigit alone passes "²", which int() refuses)
        if not parts[0].startswith("HTTP/1.") or len(code) != 3 or not code.isascii() \
                or not code.isdigit():
            raise HttpError("malformed", f"bad status line from {self.origin}",
                            response_started=True)
        return parts[0], int(parts[1])

    def _too_large(self) -> HttpError:
        return HttpError("too_large", f"response from {self.origin} exceeds "
                                      f"{self.max_response_bytes} bytes", response_started=True)

    def _read_exact(self, conn: _Connection, length: int) -> bytes:
        if length > self.max_response_bytes:
            raise self._too_large()
        while len(conn.buf) < length:
            conn.fill()
        data = bytes(conn.buf[:length])
        del conn.buf[:length]
        return data

    def _read_line(self, conn: _Connection) -> bytes:
        end = conn.buf.find(b"\r\n")
        while end < 0:
            if len(conn.buf) > MAX_HEADER_BYTES:
                raise HttpError("malformed", f"chunk line from {self.origin} too long",
                                response_started=True)
            conn.fill()
            end = conn.buf.find(b"\r\n")
        line = bytes(conn.buf[:end])
        del conn.buf[:end + 2]
        return line

    def _read_chunked(self, conn: _Connection) -> bytes:
        body = bytearray()
        while True:
            size_text = self._read_line(conn).split(b";", 1)[0].strip()
            # hex digits only: int(x, 16) also takes "-5", "0x5" and "5_0"
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                raise HttpError("malformed", f"bad chunk size from {self.origin}",
                                response_started=True)
            size = int(size_text, 16)
            if size == 0:
                while self._read_line(conn):  # trailers, up to the empty line
                    pass
                return bytes(body)
            if len(body) + size > self.max_response_bytes:
                raise self._too_large()
            body += self._read_exact(conn, size)
            if self._read_line(conn):
                raise HttpError("malformed", f"bad chunk end from {self.origin}",
                                response_started=True)

    def _read_to_close(self, conn: _Connection) -> bytes:
        while True:
            if len(conn.buf) > self.max_response_bytes:
                raise self._too_large()
            try:
                conn.fill()
            except HttpError as e:
                if e.kind != "closed":
                    raise
                data = bytes(conn.buf)
                conn.buf.clear()
                return data

    def close(self) -> None:
        """Close idle connections; connections in use close when their exchange ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


class HttpClient:
    """One HttpPool per origin (scheme, host, port), made on first use."""

    def __init__(self, *, ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, max_connections_per_origin: int = 100,
                 timeout: float = 30.0, connect_timeout: float = 10.0,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self._options = dict(ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                             max_connections=max_connections_per_origin, timeout=timeout,
                             connect_timeout=connect_timeout,
                             max_response_bytes=max_response_bytes)
        self._pools: dict[tuple[str, str, int | None], HttpPool] = {}

    def pool(self, url: str) -> HttpPool:
        """The pool for the origin of `url`."""
        parts = urlsplit(url)
        key = (parts.scheme, (parts.hostname or "").lower(), parts.port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = HttpPool(f"{parts.scheme}://{parts.netloc}",
                                               **self._options)
        return pool

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None,
                body: bytes = b"", timeout: float | None = None,
                idempotent: bool | None = None) -> HttpResponse:
        """Send one request to an absolute http(s) URL."""
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return self.pool(url).request(method, path, headers, body, timeout, idempotent)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
