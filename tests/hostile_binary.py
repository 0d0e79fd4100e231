"""A hostile APNs binary gateway for tests: TLS with client certificates on loopback, written
from the protocol (not from our emulator), doing the legal but unkind things it allows.

- error responses mid-burst: a rejected token gets (8, status, id) and the rest of what the
  client wrote on that connection is discarded, read but never processed;
- Shutdown: after every `shutdown_every` accepted notifications, (8, 10, last accepted id);
- silent drop: connection `drop_connection` closes after `drop_after` frames, no error;
- slow reads: a tiny receive buffer and `slow_read` (bytes, seconds) per read;
- late errors: `error_delay` seconds between seeing a bad frame and answering it;
- abrupt close: with `abrupt`, the socket closes right after the error response.
Every frame processed is recorded: accepted (connection, id, token, command) or rejected.
"""

from __future__ import annotations

import socket as pysocket
from dataclasses import dataclass
from typing import Any

import gevent
from gevent import socket, ssl
from gevent.server import StreamServer

from ccs.transport.tls import server_context
from http_fallback.apns.binary.frames import FrameError, FrameReader, encode_error


@dataclass(frozen=True)
class Seen:
    connection: int
    identifier: int
    token: str
    command: int
    status: int  # 0 accepted


class HostileBinary:
    def __init__(self, pki: Any, reject: dict[str, int] | None = None,
                 shutdown_every: int = 0, drop_connection: int = 0, drop_after: int = 0,
                 slow_read: tuple[int, float] | None = None, error_delay: float = 0.0,
                 abrupt: bool = False) -> None:
        self.reject = {t.lower(): s for t, s in (reject or {}).items()}
        self.shutdown_every = shutdown_every
        self.drop_connection, self.drop_after = drop_connection, drop_after
        self.slow_read, self.error_delay, self.abrupt = slow_read, error_delay, abrupt
        self.seen: list[Seen] = []
        self.connections = 0
        self.accepted_total = 0
        self.answers: list[tuple[int, int, int]] = []  # (connection, status, id) sent
        ctx = server_context(pki.cert_file, pki.key_file, client_ca_file=pki.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
        listener = socket.socket(pysocket.AF_INET, pysocket.SOCK_STREAM)
        listener.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEADDR, 1)
        if slow_read:  # a small window: what the client writes waits in its own kernel
            listener.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, 4096)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.server = StreamServer(listener, self._handle, ssl_context=ctx)

    @property
    def port(self) -> int:
        return self.server.server_port

    def accepted(self) -> list[str]:
        return [s.token for s in self.seen if s.status == 0]

    def __enter__(self) -> HostileBinary:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(timeout=1)

    def _handle(self, sock: Any, _addr: Any) -> None:
        self.connections += 1
        number = self.connections
        reader = FrameReader()
        frames_here = 0
        size = self.slow_read[0] if self.slow_read else 65536
        try:
            while True:
                data = sock.recv(size)
                if not data:
                    return
                if self.slow_read:
                    gevent.sleep(self.slow_read[1])
                try:
                    frames = reader.feed(data)
                except FrameError:
                    self._answer(sock, number, 128, 0)
                    return
                for f in frames:
                    frames_here += 1
                    if number == self.drop_connection and frames_here > self.drop_after:
                        return  # silent drop: no answer, the frame is not processed
                    status = self.reject.get(f.token.hex(), 0)
                    self.seen.append(Seen(number, f.identifier, f.token.hex(), f.command,
                                          status))
                    if status:
                        if self.error_delay:
                            self._discard(sock, self.error_delay)
                        self._answer(sock, number, status, f.identifier)
                        return
                    self.accepted_total += 1
                    if self.shutdown_every and self.accepted_total % self.shutdown_every == 0:
                        self._answer(sock, number, 10, f.identifier)
                        return
        except OSError:
            return
        finally:
            sock.close()

    def _answer(self, sock: Any, number: int, status: int, ident: int) -> None:
        self.answers.append((number, status, ident))
        try:
            sock.sendall(encode_error(status, ident))
            if not self.abrupt:
                self._discard(sock, 2.0)
        except OSError:
            pass

    @staticmethod
    def _discard(sock: Any, seconds: float) -> None:
        """Read and drop what the client keeps writing (closing on unread data resets)."""
        with gevent.Timeout(seconds, False):
            while sock.recv(65536):
                pass
