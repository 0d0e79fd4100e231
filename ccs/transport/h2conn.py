"""An HTTP/2 connection on a gevent TLS socket: one lock over h2 state, data_to_send and sendall.

Thin on purpose: the protocol above decides what to send and what events mean.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from gevent import socket, ssl
from gevent.lock import Semaphore
from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.exceptions import FrameTooLargeError
from h2.settings import SettingCodes, Settings
from hpack import Encoder, HeaderTuple
from hpack.hpack import encode_integer
from hpack.table import HeaderTable

T = TypeVar("T")


def _no_debug(record: logging.LogRecord) -> bool:
    return record.levelno > logging.DEBUG


# hpack logs whole encoded and decoded header blocks at DEBUG: the APNs JWT (`authorization`)
# would reach any application that logs everything at DEBUG. Its DEBUG records are dropped.
for _name in ("hpack.hpack", "hpack.table"):
    logging.getLogger(_name).addFilter(_no_debug)


class TransportError(OSError):
    """The socket or TLS layer failed (connect, handshake, ALPN)."""


class NothingWritten(TransportError):
    """The socket failed before any byte of an exchange went out: the peer saw none of it."""


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


class _PlainEncoder(Encoder):
    """HPACK without Huffman coding: valid HPACK, a few bytes longer, much less CPU."""

    def encode(self, headers: Any, huffman: bool = False) -> bytes:  # type: ignore[override]
        return super().encode(headers, huffman=False)


_STATIC_FULL: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _i, (_n, _v) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_FULL.setdefault((_n, _v), _i)
    _STATIC_NAME.setdefault(_n, _i)


def _integer(value: int, bits: int, flags: int = 0) -> bytes:
    """An HPACK integer with a `bits`-bit prefix, `flags` in the first byte's high bits."""
    if value < (1 << bits) - 1:
        return bytes((flags | value,))
    out = encode_integer(value, bits)
    out[0] |= flags
    return bytes(out)


def _string(data: bytes) -> bytes:
    return _integer(len(data), 7) + data  # H bit 0: no Huffman


def literal_field(name: bytes, value: bytes, never: bool) -> bytes:
    """One HPACK field that leaves the dynamic table alone (RFC 7541 6.1, 6.2.2, 6.2.3)."""
    index = None if never else _STATIC_FULL.get((name, value))
    if index is not None:
        return _integer(index, 7, 0x80)
    index = _STATIC_NAME.get(name, 0)
    out = _integer(index, 4, 0x10 if never else 0)
    return out + (b"" if index else _string(name)) + _string(value)


class LiteralEncoder(Encoder):
    """HPACK that never uses the dynamic table: static matches indexed, the rest literals
    without indexing (never-indexed when sensitive). A field's bytes depend on the field
    alone, so they are cached: no table search, no insertions, far less CPU per request than
    hpack's indexing encoder, for a few more bytes on the wire. The server's table stays
    empty (APNs keeps a small one)."""

    def __init__(self) -> None:
        super().__init__()
        self._fields: dict[tuple[Any, Any, bool], bytes] = {}

    def encode(self, headers: Any, huffman: bool = False) -> bytes:  # type: ignore[override]
        block = []
        if self.header_table.resized:  # still announce a table size the peer set
            block.append(self._encode_table_size_change())
            self.header_table.resized = False
        fields = self._fields
        for h in headers:
            # a plain tuple is its own key; a HeaderTuple (equal to the plain tuple of its
            # name and value) carries its flag in a third item
            key = h if type(h) is tuple else (h[0], h[1], not h.indexable) \
                if isinstance(h, HeaderTuple) else tuple(h)
            data = fields.get(key)
            if data is None:
                name = h[0] if type(h[0]) is bytes else str(h[0]).encode()
                value = h[1] if type(h[1]) is bytes else str(h[1]).encode()
                data = literal_field(name, value, len(key) > 2 and bool(key[2]))
                if len(fields) >= 1024:  # per-request values (ids, paths) come and go
                    fields.clear()
                fields[key] = data
            block.append(data)
        return b"".join(block)


class FastH2Connection(H2Connection):
    """H2Connection that counts open streams cheaply.

    h2 walks every stream each time one is opened, to check the concurrency limit: O(n) per
    request at 1000 in flight. Here the count is an upper bound (streams only open through
    that check) and the real walk runs every `recount` openings or whenever the bound nears the
    limit. The walk also drops closed streams, so up to `recount` of them wait in h2's table.
    """

    recount = 256

    def __init__(self, config: H2Configuration, huffman: bool = True,
                 literal: bool = False) -> None:
        super().__init__(config=config)
        if config.client_side:  # no server push: nothing here would read a pushed stream
            self.local_settings = Settings(client=True, initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: 100, SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.DEFAULT_MAX_HEADER_LIST_SIZE})
        if literal:
            self.encoder = LiteralEncoder()
        elif not huffman:
            self.encoder = _PlainEncoder()
        self._bound = [0, 0]
        self._checks = 0

    def _count(self, remainder: int, limit: int) -> int:
        bound = self._bound[remainder]
        self._checks += 1
        if bound + 1 > limit or self._checks >= self.recount:
            bound = self._open_streams(remainder)
            self._checks = 0
        self._bound[remainder] = bound + 1  # the caller opens one stream next
        return bound

    def _receive_goaway_frame(self, frame: Any) -> Any:
        # h2 turns CLOSED on GOAWAY, refusing every later frame; RFC 9113 6.8 lets streams at
        # or below last_stream_id finish, so the connection stays open for them. The owner
        # opens no new stream after ConnectionTerminated.
        before = self.state_machine.state
        result = super()._receive_goaway_frame(frame)
        if before in (ConnectionState.CLIENT_OPEN, ConnectionState.SERVER_OPEN):
            self.state_machine.state = before
        return result

    @property
    def open_outbound_streams(self) -> int:
        return self._count(int(self.config.client_side),
                           self.remote_settings.max_concurrent_streams)

    @property
    def open_inbound_streams(self) -> int:
        return self._count(int(not self.config.client_side),
                           self.local_settings.max_concurrent_streams)


def client_config() -> H2Configuration:
    # Our own headers are built correctly once; skip h2's per-request outbound checks. Inbound
    # checks are skipped too: we read only :status (malformed or missing reads as 0, a failed
    # answer) and a few headers by lowercase name; a bad header block is no reason to drop the
    # connection and every stream on it.
    return H2Configuration(client_side=True, header_encoding=None,
                           validate_outbound_headers=False, normalize_outbound_headers=False,
                           validate_inbound_headers=False, normalize_inbound_headers=False)


class FrameLengthGuard:
    """Checks each inbound frame's length as soon as its 9-byte header arrives.

    h2 checks it only once the whole frame is buffered, so a bogus length (up to 16 MiB) from a
    broken peer would stall the connection until that many bytes came or a deadline passed.
    """

    __slots__ = ("_head", "_skip")

    def __init__(self) -> None:
        self._head = b""  # a frame header split across reads
        self._skip = 0  # body bytes of the current frame still to come

    def check(self, data: bytes, limit: int) -> None:
        """Raise FrameTooLargeError when a frame header in `data` exceeds `limit`."""
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            part = data[i:i + 9 - len(self._head)]
            self._head += part
            i += len(part)
            if len(self._head) < 9:
                return
            length = int.from_bytes(self._head[:3], "big")
            self._head = b""
            if length > limit:
                raise FrameTooLargeError(f"frame of {length} bytes exceeds the {limit}-byte limit")
            self._skip = length


class H2Channel:
    """An H2Connection and its socket; every use of the state goes through `exchange`/`feed`."""

    def __init__(self, sock: Any, config: H2Configuration, huffman: bool = False,
                 literal: bool = False) -> None:
        self.sock = sock
        self.conn = FastH2Connection(config, huffman=huffman, literal=literal)
        self.lock = Semaphore()
        self.guard = FrameLengthGuard()

    def exchange(self, fn: Callable[[H2Connection], T]) -> T:
        """Run fn on the h2 state and send what it produced, all under the lock."""
        with self.lock:
            result = fn(self.conn)
            data = self.conn.data_to_send()
            if data:
                _send_all(self.sock, data)
            return result

    def feed(self, data: bytes, handle: Callable[[list[Any]], T]) -> T:
        """Hand received bytes to h2, let `handle` see the events, send any replies."""
        with self.lock:
            self.guard.check(data, self.conn.max_inbound_frame_size)
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


def _send_all(sock: Any, data: bytes) -> None:
    """sendall that tells "nothing went out" (NothingWritten) from a failure part-way."""
    view, sent = memoryview(data), 0
    try:
        while sent < len(data):
            sent += sock.send(view[sent:])
    except OSError as e:
        if sent == 0:
            raise NothingWritten(str(e)) from e
        raise
