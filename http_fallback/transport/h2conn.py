"""An HTTP/2 connection on a gevent TLS socket: one lock over h2 state, data_to_send and sendall.

Thin on purpose: the protocol above decides what to send and what events mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from gevent import socket, ssl
from gevent.lock import Semaphore
from h2.config import H2Configuration
from h2.connection import H2Connection

T = TypeVar("T")


class TransportError(OSError):
    """The socket or TLS layer failed (connect, handshake, ALPN)."""


def open_tls(host: str, port: int, context: ssl.SSLContext, server_hostname: str | None,
             timeout: float, alpn: str | None = "h2") -> ssl.SSLSocket:
    """Connect, handshake and check ALPN; every failure becomes a TransportError."""
    raw = None
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = context.wrap_socket(raw, server_hostname=server_hostname or host)
        if alpn and sock.selected_alpn_protocol() != alpn:
            sock.close()
            raise TransportError(f"{host}:{port} did not agree to ALPN {alpn}")
        sock.settimeout(None)
        return sock
    except TransportError:
        raise
    except (OSError, ssl.SSLError) as e:
        if raw is not None:
            raw.close()
        raise TransportError(f"{host}:{port}: {e}") from e


def client_config() -> H2Configuration:
    # Our own headers are built correctly once; skip h2's per-request outbound checks.
    return H2Configuration(client_side=True, header_encoding=None,
                           validate_outbound_headers=False, normalize_outbound_headers=False)


class H2Channel:
    """An H2Connection and its socket; every use of the state goes through `exchange`/`feed`."""

    def __init__(self, sock: Any, config: H2Configuration) -> None:
        self.sock = sock
        self.conn = H2Connection(config=config)
        self.lock = Semaphore()

    def exchange(self, fn: Callable[[H2Connection], T]) -> T:
        """Run fn on the h2 state and send what it produced, all under the lock."""
        with self.lock:
            result = fn(self.conn)
            data = self.conn.data_to_send()
            if data:
                self.sock.sendall(data)
            return result

    def feed(self, data: bytes, handle: Callable[[list[Any]], T]) -> T:
        """Hand received bytes to h2, let `handle` see the events, send any replies."""
        with self.lock:
            result = handle(self.conn.receive_data(data))
            out = self.conn.data_to_send()
            if out:
                self.sock.sendall(out)
            return result

    def recv(self) -> bytes:
        return self.sock.recv(65536)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
