"""Emulator of the binary gateway and the feedback service (both TLS with client certificates).

Gateway: reads commands 0, 1 and 2; a bad or scripted notification gets the error response
(8, status, identifier) and the connection closes, discarding whatever followed. Command 0 has
no error response: the connection just closes. Feedback: serves its 38-byte tuples, forgets them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent import ssl
from gevent.server import StreamServer

from ccs.testing.pki import TestPKI
from ccs.transport.tls import server_context
from http_fallback.apns.binary.frames import (
    MAX_PAYLOAD,
    TOKEN_SIZE,
    Frame,
    FrameError,
    FrameReader,
    encode_error,
    encode_feedback,
)


@dataclass
class SeenFrame:
    connection: int
    command: int
    identifier: int
    token: str
    payload: Any
    status: int  # 0 = accepted
    at: float = field(default_factory=time.time)


class BinaryEmulator:
    """Gateway on `gateway_port`, feedback service on `feedback_port`; a context manager."""

    def __init__(self, pki: TestPKI, host: str = "127.0.0.1", gateway_port: int = 0,
                 feedback_port: int = 0, payload_limit: int = MAX_PAYLOAD,
                 require_cert: bool = True) -> None:
        self.pki, self.host = pki, host
        self.gateway_port, self.feedback_port = gateway_port, feedback_port
        self.payload_limit = payload_limit
        self.require_cert = require_cert
        self.seen: list[SeenFrame] = []
        self.scripted: dict[str, int] = {}  # token hex -> status, every time
        self.feedback: list[tuple[int, str]] = []
        self.connections = 0
        self._live: list[tuple[Any, list[int]]] = []
        self._servers: list[StreamServer] = []

    @property
    def ca_file(self) -> str:
        return self.pki.ca_file

    def reject(self, token: str, status: int = 8) -> None:
        """Every notification to `token` gets this error status (8: invalid token)."""
        self.scripted[token.lower()] = status

    def add_feedback(self, token: str, timestamp: int | None = None) -> None:
        self.feedback.append((int(time.time()) if timestamp is None else timestamp, token))

    def shutdown(self) -> None:
        """Status 10 (Shutdown) naming the last accepted identifier, then close."""
        for sock, last in list(self._live):
            try:
                sock.sendall(encode_error(10, last[0]))
            except OSError:
                pass
            sock.close()

    def start(self) -> BinaryEmulator:
        ctx = server_context(self.pki.cert_file, self.pki.key_file,
                             client_ca_file=self.pki.ca_file if self.require_cert else None)
        if self.require_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
        gw = StreamServer((self.host, self.gateway_port), self._gateway, ssl_context=ctx)
        fb = StreamServer((self.host, self.feedback_port), self._feedback, ssl_context=ctx)
        for server in (gw, fb):
            server.start()
            self._servers.append(server)
        self.gateway_port, self.feedback_port = gw.server_port, fb.server_port
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.stop(timeout=1)

    def __enter__(self) -> BinaryEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check(self, f: Frame) -> int:
        if not f.token:
            return 2
        if len(f.token) != TOKEN_SIZE:
            return 5
        if not f.payload:
            return 4
        if len(f.payload) > self.payload_limit:
            return 7
        try:
            json.loads(f.payload)
        except ValueError:
            return 1
        return self.scripted.get(f.token.hex(), 0)

    def _gateway(self, sock: Any, address: Any) -> None:
        self.connections += 1
        number = self.connections
        reader = FrameReader()
        last = [0]
        entry = (sock, last)
        self._live.append(entry)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                try:
                    frames = reader.feed(data)
                except FrameError:
                    sock.sendall(encode_error(128, 0))
                    return
                for f in frames:
                    status = self._check(f)
                    try:
                        payload = json.loads(f.payload)
                    except ValueError:
                        payload = f.payload
                    self.seen.append(SeenFrame(number, f.command, f.identifier, f.token.hex(),
                                               payload, status))
                    if status:
                        if f.command != 0:
                            sock.sendall(encode_error(status, f.identifier))
                        self._discard_rest(sock)
                        return
                    last[0] = f.identifier
        except OSError:
            return
        finally:
            self._live.remove(entry)
            sock.close()

    @staticmethod
    def _discard_rest(sock: Any) -> None:
        # read and drop what follows until the client hangs up: closing with unread data
        # would send a TCP reset, which can destroy the error response in flight
        with gevent.Timeout(2, False):
            while sock.recv(65536):
                pass

    def _feedback(self, sock: Any, address: Any) -> None:
        served, self.feedback = self.feedback, []
        try:
            sock.sendall(b"".join(encode_feedback(ts, tok) for ts, tok in served))
        except OSError:
            pass
        finally:
            sock.close()
