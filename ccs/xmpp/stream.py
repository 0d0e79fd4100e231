"""A sans-I/O XMPP client stream for CCS: bytes in, events out; bytes to send collected.

Why our own stream rather than slixmpp's XMLStream: measured on this machine (2 cores,
Python 3.11, 20,000 messages of ~200 bytes, window 100, loopback):
slixmpp on plain asyncio 89 us of client CPU per send+ack; slixmpp on asyncio-gevent's loop in a
greenlet with batched hand-over and coalesced writes 73 us; a gevent-native stream using only
slixmpp's stanza objects and XML handling 46 us. The goal is <= 60 us, so this module drives the
stream itself with slixmpp's stanzas (SASL, bind, session, ping) over ElementTree, and
scripts/bench_ccs.py measures the result against slixmpp's own client in the same run: 30.6 us
per send+ack for this client, 60.9 us for slixmpp on asyncio (2026-11-25, 20,000 messages).

Handshake (docs/providers/ccs.rst): stream header, SASL PLAIN with authcid
`<sender_id>@<domain>`, stream restart, bind (resource kept), session iq. No STARTTLS: TLS is
the socket's job, on connect.
"""

from __future__ import annotations

import enum
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from slixmpp.features.feature_bind.stanza import Bind
from slixmpp.features.feature_mechanisms.stanza import Auth
from slixmpp.features.feature_session.stanza import Session
from slixmpp.plugins.xep_0199.stanza import Ping
from slixmpp.stanza import Iq
from slixmpp.xmlstream import register_stanza_plugin, tostring

from ccs.xmpp.stanzas import GCM_NS, GCM_TAG

register_stanza_plugin(Iq, Bind)
register_stanza_plugin(Iq, Session)
register_stanza_plugin(Iq, Ping)

STREAM_NS = "http://etherx.jabber.org/streams"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"
STANZA_ERR_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
PING_NS = "urn:xmpp:ping"
CLIENT_NS = "jabber:client"

MAX_STANZA_BYTES = 1 << 20  # one stanza larger than this closes the stream


class State(enum.Enum):
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    BINDING = "binding"
    READY = "ready"
    CLOSED = "closed"


# Events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    jid: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    condition: str


@dataclass(frozen=True, slots=True)
class GcmReceived:
    """A `<message>` carrying a gcm element; `json` is its text, unparsed."""

    json: str
    stanza_id: str | None


@dataclass(frozen=True, slots=True)
class StanzaError:
    """A `<message type="error">`: `json` is the echoed payload when there is one."""

    code: str | None
    condition: str | None
    text: str | None
    json: str | None
    stanza_id: str | None


@dataclass(frozen=True, slots=True)
class Pong:
    iq_id: str


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The stream ended: a stream error (condition) or the server's `</stream:stream>`."""

    condition: str | None
    text: str | None = None


Event = Ready | AuthFailed | GcmReceived | StanzaError | Pong | StreamClosed


class ProtocolViolation(Exception):
    """The peer sent something XMPP forbids; the connection must be closed."""


# The stream -------------------------------------------------------------------------------------


class XmppStream:
    """Client side of one XMPP stream. Feed `receive()`; drain `data_to_send()`."""

    def __init__(self, domain: str, authcid: str, password: str, resource: str) -> None:
        self.domain = domain
        self.state = State.CONNECTING
        self.jid: str | None = None
        self._authcid = authcid
        self._password = password
        self._resource = resource
        self._out: list[bytes] = []
        self._parser: ET.XMLPullParser
        self._depth = 0
        self._root: ET.Element | None = None
        self._pending_bytes = 0
        self._tail = b""
        self._iq_seq = 0
        self._session_wanted = False
        self._open()

    def __repr__(self) -> str:  # never shows the password
        return f"<XmppStream {self._authcid} {self.state.value}>"

    # outbound -----------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def send_gcm(self, json_text: str, to: str | None = None) -> None:
        """Queue one `<message><gcm>JSON</gcm></message>` (see encode_gcm)."""
        self._out.append(encode_gcm(json_text, to))

    def send_ping(self) -> str:
        self._iq_seq += 1
        iq = Iq()
        iq["type"] = "get"
        iq["id"] = f"ping{self._iq_seq}"
        iq["to"] = self.domain
        iq.enable("ping")
        self._write(iq.xml)
        return iq["id"]

    def close(self) -> None:
        if self.state is not State.CLOSED:
            self._out.append(b"</stream:stream>")
            self.state = State.CLOSED

    def _write(self, xml: ET.Element) -> None:
        self._out.append(tostring(xml, xmlns=CLIENT_NS, top_level=True).encode())

    def _open(self) -> None:
        self._parser = ET.XMLPullParser(("start", "end"))
        self._depth = 0
        self._root = None
        self._out.append(
            b"<?xml version='1.0'?><stream:stream to='%s' version='1.0' "
            b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
            % self.domain.encode()
        )

    # inbound ------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Parse bytes from the server; return what happened. Raises ProtocolViolation."""
        if self.state is State.CLOSED:
            return []
        # XMPP forbids DTDs, entity declarations, comments and CDATA (RFC 6120 11.1): refusing
        # any "<!" and "<?" after the prolog keeps entity expansion out of the parser entirely.
        if b"<!" in data or (self._tail == b"<" and data[:1] == b"!"):
            raise ProtocolViolation("restricted-xml: DTD, comment or CDATA in stream")
        self._tail = data[-1:]
        try:
            self._parser.feed(data)
            events: list[Event] = []
            for kind, el in self._parser.read_events():
                if kind == "start":
                    if self._depth == 0:
                        self._root = el
                    self._depth += 1
                    continue
                self._depth -= 1
                if self._depth == 1:
                    self._pending_bytes = 0
                    self._handle(el, events)
                    if self._root is not None:
                        self._root.clear()
                    if self.state is State.CLOSED:
                        return events
                elif self._depth == 0:
                    self.state = State.CLOSED
                    events.append(StreamClosed(None, "end of stream"))
                    return events
        except ET.ParseError as exc:
            raise ProtocolViolation(f"invalid-xml: {exc}") from exc
        if self._depth >= 1:
            # counted from the stream's level too: an unfinished start tag or a run of text
            # between stanzas is buffered by the parser just like a stanza's body
            self._pending_bytes += len(data)
            if self._pending_bytes > MAX_STANZA_BYTES:
                raise ProtocolViolation("policy-violation: stanza too large")
        return events

    def _handle(self, el: ET.Element, events: list[Event]) -> None:
        tag = el.tag
        if tag == "{jabber:client}message":
            self._message(el, events)
        elif tag == "{jabber:client}iq":
            self._iq(el, events)
        elif tag == f"{{{STREAM_NS}}}features":
            self._features(el)
        elif tag == f"{{{SASL_NS}}}success":
            self.state = State.BINDING
            self._open()  # stream restart after SASL
        elif tag == f"{{{SASL_NS}}}failure":
            cond = el[0].tag.split("}")[-1] if len(el) else "failure"
            self.state = State.CLOSED
            events.append(AuthFailed(cond))
        elif tag == f"{{{STREAM_NS}}}error":
            cond, text = _error_parts(el, "urn:ietf:params:xml:ns:xmpp-streams")
            self.state = State.CLOSED
            events.append(StreamClosed(cond, text))

    def _message(self, el: ET.Element, events: list[Event]) -> None:
        gcm = el.find(GCM_TAG)
        if el.get("type") == "error":
            err = el.find("{jabber:client}error")
            cond, text = _error_parts(err, STANZA_ERR_NS) if err is not None else (None, None)
            code = err.get("code") if err is not None else None
            json_text = gcm.text if gcm is not None else None
            events.append(StanzaError(code, cond, text, json_text, el.get("id")))
        elif gcm is not None:
            events.append(GcmReceived(gcm.text or "", el.get("id")))

    def _features(self, el: ET.Element) -> None:
        if self.state is State.CONNECTING:
            mechs = el.find(f"{{{SASL_NS}}}mechanisms")
            names = {m.text for m in mechs} if mechs is not None else set()
            if "PLAIN" not in names:
                raise ProtocolViolation(f"server offers no SASL PLAIN (offers {sorted(names)})")
            auth = Auth()
            auth["mechanism"] = "PLAIN"
            auth["value"] = b"\x00" + self._authcid.encode() + b"\x00" + self._password.encode()
            self._out.append(tostring(auth.xml, top_level=True).encode())
            self.state = State.AUTHENTICATING
        elif self.state is State.BINDING:
            self._session_wanted = el.find(f"{{{SESSION_NS}}}session") is not None
            iq = Iq()
            iq["type"] = "set"
            iq["id"] = "bind1"
            iq["bind"]["resource"] = self._resource
            self._write(iq.xml)

    def _iq(self, el: ET.Element, events: list[Event]) -> None:
        iq_id = el.get("id") or ""
        kind = el.get("type")
        if kind == "get" and el.find(f"{{{PING_NS}}}ping") is not None:
            reply = Iq()
            reply["type"] = "result"
            reply["id"] = iq_id
            if el.get("from"):
                reply["to"] = el.get("from")
            self._write(reply.xml)
        elif iq_id == "bind1" and kind == "result":
            jid_el = el.find(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid")
            self.jid = jid_el.text if jid_el is not None else None
            if self._session_wanted:
                iq = Iq()
                iq["type"] = "set"
                iq["id"] = "sess1"
                iq.enable("session")
                self._write(iq.xml)
            else:
                self._ready(events)
        elif iq_id == "sess1" and kind == "result":
            self._ready(events)
        elif iq_id in ("bind1", "sess1") and kind == "error":
            self.state = State.CLOSED
            cond, _text = _error_parts(el.find("{jabber:client}error"), STANZA_ERR_NS)
            events.append(AuthFailed(f"{iq_id[:-1]} refused: {cond}"))
        elif iq_id.startswith("ping") and kind in ("result", "error"):
            # An error reply still proves the stream is alive.
            events.append(Pong(iq_id))
        elif kind in ("get", "set"):
            reply = Iq()
            reply["type"] = "error"
            reply["id"] = iq_id
            reply["error"]["condition"] = "service-unavailable"
            reply["error"]["type"] = "cancel"
            self._write(reply.xml)

    def _ready(self, events: list[Event]) -> None:
        self.state = State.READY
        events.append(Ready(self.jid or ""))


def _error_parts(el: ET.Element | None, ns: str) -> tuple[str | None, str | None]:
    if el is None:
        return None, None
    cond = text = None
    for child in el:
        name = child.tag.split("}")[-1]
        if child.tag == f"{{{ns}}}text":
            text = child.text
        elif child.tag.startswith(f"{{{ns}}}") and cond is None:
            cond = name
    return cond, text


def encode_gcm(json_text: str, to: str | None = None) -> bytes:
    """One `<message><gcm xmlns="google:mobile:data">JSON</gcm></message>`, escaped by
    ElementTree's serialiser. CCS routes by the JSON's `to` and the stanza has none; `to` sets
    the stanza's address for other XMPP servers (tests/xmpp/test_interop_prosody.py).

    slixmpp's `tostring` escapes text one character at a time: 35 us for a 330-byte JSON
    payload, most of the client's budget. ElementTree's serialiser (the same Element objects
    slixmpp stanzas wrap) does it in 15 us, measured on this machine. `message` is left
    unqualified so it takes the stream's default namespace (jabber:client).
    """
    msg = ET.Element("message")
    if to:
        msg.set("to", to)
    ET.SubElement(msg, "gcm", _GCM_ATTRS).text = json_text
    return ET.tostring(msg)


_GCM_ATTRS = {"xmlns": GCM_NS}


def plain_credentials(sender_id: str, domain: str) -> str:
    """The SASL PLAIN authcid CCS expects: `<sender_id>@<domain>`."""
    return f"{sender_id}@{domain}"


__all__ = [
    "AuthFailed",
    "Event",
    "GcmReceived",
    "Pong",
    "ProtocolViolation",
    "Ready",
    "StanzaError",
    "State",
    "StreamClosed",
    "XmppStream",
    "encode_gcm",
    "plain_credentials",
]
