"""A bare HTTP/2 client for tests: opens streams as told and records every event it receives."""

from __future__ import annotations

import json
from typing import Any

import gevent
from gevent import socket
from gevent.lock import Semaphore
from h2 import events as ev
from h2.config import H2Configuration
from h2.connection import H2Connection

from ccs.transport.tls import client_context


class _Graceful(H2Connection):
    """h2 closes its state on a received GOAWAY and then refuses the answers a graceful server
    still sends to streams at or below last_stream_id; this one keeps reading them."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        state = self.state_machine.state
        result = super()._receive_goaway_frame(frame)
        self.state_machine.state = state
        return result


class RawH2:
    """One TLS connection speaking h2; `events` lists what arrived, `answers` stream -> status."""

    def __init__(self, port: int, ca_file: str, alpn: tuple[str, ...] = ("h2",)) -> None:
        ctx = client_context(ca_file, alpn=list(alpn))
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                    server_hostname="127.0.0.1")
        self.alpn = self.sock.selected_alpn_protocol()
        self.conn = _Graceful(H2Configuration(client_side=True, header_encoding=None))
        self.lock = Semaphore()  # h2 state, data_to_send and sendall together
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.port = port
        self.events: list[Any] = []
        self.answers: dict[int, int] = {}
        self.bodies: dict[int, bytes] = {}
        self.closed = False
        self.reader = gevent.spawn(self._read)

    def post(self, path: str, token: str, message: dict[str, Any]) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [(b":method", b"POST"), (b":scheme", b"https"),
                   (b":authority", f"127.0.0.1:{self.port}".encode()), (b":path", path.encode()),
                   (b"authorization", f"Bearer {token}".encode())]
        with self.lock:
            self.conn.send_headers(sid, headers)
            self.conn.send_data(sid, json.dumps({"message": message}).encode(), end_stream=True)
            self.sock.sendall(self.conn.data_to_send())
        return sid

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            with self.lock:
                for e in self.conn.receive_data(data):
                    self.events.append(e)
                    if isinstance(e, ev.ResponseReceived):
                        self.answers[e.stream_id] = int(dict(e.headers)[b":status"])
                    elif isinstance(e, ev.DataReceived):
                        self.conn.acknowledge_received_data(e.flow_controlled_length,
                                                            e.stream_id)
                        self.bodies[e.stream_id] = self.bodies.get(e.stream_id, b"") + e.data
                out = self.conn.data_to_send()
                if out:
                    try:
                        self.sock.sendall(out)
                    except OSError:
                        pass

    def close(self) -> None:
        self.reader.kill()
        self.sock.close()
