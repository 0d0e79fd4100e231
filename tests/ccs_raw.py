"""A hand-rolled CCS test client over a real TLS socket, parsing with lxml (not the emulator's
parser), so emulator tests check the wire, not the emulator against itself."""

from __future__ import annotations

import base64
import json
from typing import Any

import gevent
from gevent import socket
from gevent.queue import Empty, Queue
from lxml import etree

from ccs.transport.tls import client_context

GCM = "{google:mobile:data}gcm"
STREAM_OPEN = (b"<stream:stream to='gcm.googleapis.com' version='1.0' xmlns='jabber:client' "
               b"xmlns:stream='http://etherx.jabber.org/streams'>")
CLOSED = object()


def gcm_stanza(payload: Any, prefixed: bool = False, **attrs: str) -> bytes:
    """A `<message><gcm>JSON</gcm></message>`, escaped by lxml."""
    el = etree.Element("message", **attrs)
    nsmap = {"data": "google:mobile:data"} if prefixed else {None: "google:mobile:data"}
    gcm = etree.SubElement(el, GCM, nsmap=nsmap)
    gcm.text = payload if isinstance(payload, str) else json.dumps(payload)
    return etree.tostring(el)


class RawCcs:
    """Connect, log in, send stanzas, read stanzas (as lxml elements) from a queue."""

    def __init__(self, emu: Any, sender: str | None = None, key: str | None = None) -> None:
        self.emu = emu
        self.sender = sender or emu.sender_id
        self.key = key if key is not None else emu.server_key
        self.stanzas: Queue = Queue()
        self.raw = bytearray()
        self._early: list[Any] = []
        self._new_parser()
        ctx = client_context(emu.ca_file)
        plain = socket.create_connection((emu.host, emu.port))
        self.sock = ctx.wrap_socket(plain, server_hostname="gcm.googleapis.com")
        self._reader = gevent.spawn(self._read)

    def _new_parser(self) -> None:
        self._parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False,
                                           no_network=True)
        self._depth = 0

    def _read(self) -> None:
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.raw += data
                self._parser.feed(data)
                for event, el in self._parser.read_events():
                    if event == "start":
                        self._depth += 1
                        if self._depth == 1:
                            self.stanzas.put(("open", el))
                    else:
                        self._depth -= 1
                        if self._depth == 1:
                            self.stanzas.put(el)
        except (OSError, etree.XMLSyntaxError):
            pass
        self.stanzas.put(CLOSED)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self, timeout: float = 5.0) -> Any:
        if self._early:
            return self._early.pop(0)
        try:
            return self.stanzas.get(timeout=timeout)
        except Empty:
            raise AssertionError("no stanza from the emulator in time") from None

    def open_stream(self) -> etree._Element:
        self.send(STREAM_OPEN)
        opened = self.next()
        assert isinstance(opened, tuple) and opened[0] == "open", opened
        features = self.next()
        assert features.tag == "{http://etherx.jabber.org/streams}features", features.tag
        return features

    def auth(self, authcid: str | None = None, password: str | None = None) -> etree._Element:
        authcid = authcid or f"{self.sender}@gcm.googleapis.com"
        password = self.key if password is None else password
        blob = base64.b64encode(f"\0{authcid}\0{password}".encode()).decode()
        el = etree.Element("{urn:ietf:params:xml:ns:xmpp-sasl}auth", mechanism="PLAIN",
                           nsmap={None: "urn:ietf:params:xml:ns:xmpp-sasl"})
        el.text = blob
        self.send(etree.tostring(el))
        return self.next()

    def login(self, resource: str = "test") -> str:
        """Full handshake; returns the bound JID."""
        self.open_stream()
        answer = self.auth()
        assert answer.tag == "{urn:ietf:params:xml:ns:xmpp-sasl}success", answer.tag
        self._new_parser()
        self.open_stream()
        self.send(b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  b"<resource>" + resource.encode() + b"</resource></bind></iq>")
        bound = self.next()
        assert bound.get("type") == "result", etree.tostring(bound)
        jid = bound.findtext(".//{urn:ietf:params:xml:ns:xmpp-bind}jid")
        self.send(b"<iq type='set' id='s1'><session "
                  b"xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        while True:  # the server may send stanzas as soon as the resource is bound
            el = self.stanzas.get(timeout=5)
            if el is not CLOSED and el.get("id") == "s1":
                assert el.get("type") == "result"
                break
            self._early.append(el)
        return jid

    def send_gcm(self, payload: Any, prefixed: bool = False, **attrs: str) -> None:
        self.send(gcm_stanza(payload, prefixed, **attrs))

    def next_gcm(self, timeout: float = 5.0) -> dict[str, Any]:
        """The JSON of the next gcm message (skipping nothing: any other stanza fails)."""
        el = self.next(timeout)
        assert el is not CLOSED, "connection closed"
        gcm = el.find(GCM)
        assert gcm is not None, etree.tostring(el)
        return json.loads(gcm.text)

    def ack(self, msg: dict[str, Any]) -> None:
        to = msg.get("from")
        self.send_gcm({"to": to, "message_id": msg["message_id"], "message_type": "ack"})

    def idle(self) -> bool:
        return not self._early and self.stanzas.empty()

    def closed(self, timeout: float = 5.0) -> bool:
        """Drain stanzas until the emulator closes the connection."""
        while True:
            if self.next(timeout) is CLOSED:
                return True

    def close(self) -> None:
        self._reader.kill()
        try:
            self.sock.close()
        except OSError:
            pass

