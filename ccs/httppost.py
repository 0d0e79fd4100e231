"""One HTTP/1.1 POST over gevent sockets (TLS verified for https): for the webhook."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from gevent import socket

from ccs.tls import client_context


class PostError(Exception):
    """The POST did not get a response (connect, TLS, timeout, malformed reply)."""


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float = 10.0,
         ca_file: str | None = None) -> int:
    """POST `body` to `url`; returns the response status. Raises PostError on no response."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise PostError(f"not an http(s) URL: {url!r}")
    port = u.port or (443 if u.scheme == "https" else 80)
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    host = u.hostname if u.port is None else f"{u.hostname}:{u.port}"
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
             "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    try:
        sock = socket.create_connection((u.hostname, port), timeout=timeout)
        try:
            if u.scheme == "https":
                sock = client_context(ca_file).wrap_socket(sock, server_hostname=u.hostname)
            sock.sendall(request)
            head = b""
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
        finally:
            sock.close()
    except OSError as exc:
        raise PostError(f"{type(exc).__name__}: {exc}") from None
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") \
            or not status_line[1].isdigit():
        raise PostError(f"malformed response: {head[:60]!r}")
    return int(status_line[1])
