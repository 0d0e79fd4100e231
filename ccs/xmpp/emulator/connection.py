"""One client connection to the emulator: TLS socket, XMPP handshake, batched writes.

What CCS does with a gcm message lives in behaviour.py; this module only moves bytes and walks
the stream through SASL PLAIN, restart, bind and session.
"""

from __future__ import annotations

import heapq
import socket as stdlib_socket
import struct
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, Protocol

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from ccs.xmpp.emulator import stanzas
from ccs.xmpp.emulator.record import Record
from ccs.xmpp.emulator.settings import Faults, Settings
from ccs.xmpp.emulator.xmlstream import (
    CLIENT_NS,
    StanzaReceived,
    StreamClosed,
    StreamOpened,
    StreamParser,
    XmlStreamError,
)

MESSAGE = f"{{{CLIENT_NS}}}message"
IQ = f"{{{CLIENT_NS}}}iq"
PRESENCE = f"{{{CLIENT_NS}}}presence"
AUTH = f"{{{stanzas.SASL_NS}}}auth"
BIND = f"{{{stanzas.BIND_NS}}}bind"
SESSION = f"{{{stanzas.SESSION_NS}}}session"
PING = f"{{{stanzas.PING_NS}}}ping"
RESOURCE = f"{{{stanzas.BIND_NS}}}resource"


class _Closed(Exception):
    """Raised inside the read loop once the connection has been closed."""


class MessageHandler(Protocol):
    def on_message(self, conn: Connection, el: ET.Element) -> None: ...


class Host(Protocol):
    """What a connection reads from and tells the emulator that accepted it (CcsEmulator)."""

    sender_id: str
    domain: str
    settings: Settings
    faults: Faults
    record: Record
    behaviour: MessageHandler

    def spawn(self, fn: Callable[..., Any], *args: Any) -> gevent.Greenlet: ...

    def check_credentials(self, creds: tuple[str, str, str] | None) -> str | None: ...

    def authenticated_count(self) -> int: ...

    def on_ready(self, conn: Connection) -> None: ...

    def on_closed(self, conn: Connection, reason: str) -> None: ...


class Connection:
    """Server side of one XMPP stream. `pending` counts downstream not yet answered on the wire."""

    def __init__(self, emu: Host, conn_id: int, sock: stdlib_socket.socket) -> None:
        self.emu = emu
        self.id = conn_id
        self.sock = sock
        self.state = "start"  # start -> sasl -> authed -> bind -> ready
        self.jid: str | None = None
        self.pending = 0
        self.received = 0  # downstream messages received on this connection
        self.draining = False
        self.drained_at = 0.0
        self.open = True
        self.last_write = time.monotonic()
        self._auth_failures = 0
        self._restarting = False
        self._parser = StreamParser(emu.settings.max_stanza)
        self._out: list[bytes] = []
        self._out_answers = 0
        self._wlock = Semaphore()
        # ack_delay: one heap and one timer greenlet per connection, not a greenlet per message.
        self._heap: list[tuple[float, int, bytes, Callable[[], None] | None]] = []
        self._seq = 0
        self._wake = Event()
        self._timer: gevent.Greenlet | None = None

    @property
    def ready(self) -> bool:
        return self.open and self.state == "ready"

    # reading -------------------------------------------------------------------------------
    def serve(self) -> None:
        """Read until the peer or the emulator closes the stream."""
        sock = self.sock
        try:
            while self.open:
                data = sock.recv(65536)
                if not data:
                    self.close("peer closed TCP")
                    return
                self._feed(data)
                # Gather what TLS already decrypted before writing, so answers go out in batches.
                while self.open and sock.pending():
                    self._feed(sock.recv(65536))
                self.flush()
        except _Closed:
            pass
        except XmlStreamError as exc:
            self.emu.record.note(self.emu.record.stream_errors, self.id, str(exc))
            self.stream_error(exc.condition, exc.text)
        except OSError as exc:
            self.close(f"socket error: {exc}")
        finally:
            if self.open:
                self.close("reader ended")

    def _feed(self, data: bytes) -> None:
        for event in self._parser.feed(data):
            if isinstance(event, StanzaReceived):
                self._stanza(event.element)
                if not self.open:
                    raise _Closed
                if self._restarting:
                    # SASL success restarts the stream: a fresh parser for the next header.
                    self._restarting = False
                    self._parser = StreamParser(self.emu.settings.max_stanza)
                    return
            elif isinstance(event, StreamOpened):
                self._opened(event.attrs)
            elif isinstance(event, StreamClosed):
                self.end_stream("peer closed stream")
                raise _Closed

    def _opened(self, attrs: dict[str, str]) -> None:
        header = stanzas.stream_header(self.emu.domain, uuid.uuid4().hex)
        if self.state == "start":
            self.state = "sasl"
            self.send(header + stanzas.sasl_features())
        elif self.state == "authed":
            self.state = "bind"
            self.send(header + stanzas.bind_features())
        else:
            raise XmlStreamError("invalid-xml", "unexpected stream header")

    def _stanza(self, el: ET.Element) -> None:
        state = self.state
        if self.emu.faults.stall and state != "start":
            self.emu.record.note(self.emu.record.ignored, self.id, f"stalled: {el.tag}")
            return
        if state == "ready":
            if el.tag == MESSAGE:
                self.emu.behaviour.on_message(self, el)
            elif el.tag == IQ:
                self._iq(el)
            elif el.tag != PRESENCE:
                raise XmlStreamError("unsupported-stanza-type", el.tag)
        elif state == "sasl":
            if el.tag != AUTH:
                raise XmlStreamError("not-authorized", "authenticate first")
            self._auth(el)
        elif state == "bind" and el.tag == IQ:
            self._iq(el)
        else:
            raise XmlStreamError("not-authorized", f"{el.tag} before bind")

    def _auth(self, el: ET.Element) -> None:
        record = self.emu.record
        mech = el.get("mechanism")
        if mech != "PLAIN":
            record.note(record.auth_failures, self.id, f"mechanism {mech!r}")
            self.send(stanzas.sasl_failure("invalid-mechanism"))
            return
        creds = stanzas.decode_plain(el.text or "")
        reason = self.emu.check_credentials(creds)
        if reason is None and self.emu.authenticated_count() >= self.emu.settings.max_connections:
            record.note(record.auth_failures, self.id, "too many connections for this sender")
            self.stream_error("policy-violation",
                              f"more than {self.emu.settings.max_connections} connections")
            raise _Closed
        if reason is None:
            assert creds is not None
            record.note(record.auth_ok, self.id, creds[1])
            self.state = "authed"
            self._restarting = True
            self.send(stanzas.sasl_success())
            return
        record.note(record.auth_failures, self.id, reason)
        self._auth_failures += 1
        self.send(stanzas.sasl_failure("not-authorized"))
        if self._auth_failures >= self.emu.settings.max_auth_failures:
            self.stream_error("not-authorized", "too many authentication failures")
            raise _Closed

    def _iq(self, el: ET.Element) -> None:
        iq_id = el.get("id", "")
        kind = el.get("type")
        child = el[0] if len(el) else None
        tag = child.tag if child is not None else None
        if kind == "set" and tag == BIND and self.state == "bind":
            res = child.find(RESOURCE) if child is not None else None
            resource = (res.text or "").strip() if res is not None else ""
            self.jid = f"{self.emu.sender_id}@{self.emu.domain}/{resource or uuid.uuid4().hex[:8]}"
            self.state = "ready"
            self.send(stanzas.bind_result(iq_id, self.jid))
            self.emu.on_ready(self)
        elif kind == "set" and tag == SESSION:
            self.send(stanzas.iq_result(iq_id))
        elif kind == "get" and tag == PING:
            self.send(stanzas.iq_result(iq_id, frm=self.emu.domain))
        elif kind in ("get", "set"):
            self.send(stanzas.iq_error(iq_id))
        # iq result/error from the client: nothing to do

    # writing -------------------------------------------------------------------------------
    def send(self, data: bytes, answers: int = 0) -> None:
        """Queue bytes for the next flush; `answers` = downstream messages this answers."""
        self._out.append(data)
        self._out_answers += answers

    def answer(self, data: bytes, then: Callable[[], None] | None = None) -> None:
        """Queue an ack/nack now, or after ack_delay through this connection's timer; `then`
        runs when it is queued for the socket."""
        delay = self.emu.faults.ack_delay
        if delay <= 0 and not self._heap:
            self.send(data, 1)
            if then is not None:
                then()
            return
        self._seq += 1
        heapq.heappush(self._heap, (time.monotonic() + delay, self._seq, data, then))
        if self._timer is None:
            self._timer = self.emu.spawn(self._run_timer)
        self._wake.set()

    def _run_timer(self) -> None:
        heap = self._heap
        while self.open:
            self._wake.clear()
            if not heap:
                self._wake.wait()
                continue
            wait = heap[0][0] - time.monotonic()
            if wait > 0:
                self._wake.wait(wait)
                continue
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                _, _, data, then = heapq.heappop(heap)
                self.send(data, 1)
                if then is not None:
                    then()
            self.flush()

    def flush(self) -> None:
        if not self._out or not self.open or self.emu.faults.stall:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        answers = self._out_answers
        self._out = []
        self._out_answers = 0
        try:
            with self._wlock:
                self.sock.sendall(data)
        except OSError as exc:
            self.close(f"write failed: {exc}")
            return
        self.pending -= answers
        self.last_write = time.monotonic()

    # closing -------------------------------------------------------------------------------
    def stream_error(self, condition: str, text: str = "") -> None:
        head = b"" if self.state != "start" else stanzas.stream_header(self.emu.domain, "err")
        self._out = [head + stanzas.stream_error(condition, text)]
        self._out_answers = 0
        self.flush()
        self.close(f"stream error {condition}")

    def end_stream(self, reason: str) -> None:
        """Close politely: `</stream:stream>` after whatever is queued."""
        self.send(stanzas.STREAM_END)
        self.flush()
        self.close(reason)

    def abort(self, reason: str) -> None:
        """Close the TCP connection at once with a reset, leaving everything unanswered."""
        try:
            self.sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER,
                           struct.pack("ii", 1, 0))
        except OSError:
            pass
        self._out = []
        self.close(reason)

    def close(self, reason: str) -> None:
        if not self.open:
            return
        self.open = False
        self._wake.set()
        try:
            self.sock.close()
        except OSError:
            pass
        self.emu.on_closed(self, reason)
