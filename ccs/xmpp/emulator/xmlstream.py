"""Incremental, safe XMPP stream parsing (sans-I/O): bytes in, stream events out.

Built on pyexpat with namespace processing. Any DTD, entity declaration or processing instruction
is refused (XMPP forbids them; this also rules out entity-expansion attacks), and a stanza larger
than `max_stanza` bytes is refused.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.parsers import expat

STREAM_NS = "http://etherx.jabber.org/streams"
CLIENT_NS = "jabber:client"
DEFAULT_MAX_STANZA = 256 * 1024


class XmlStreamError(Exception):
    """The peer broke XML or XMPP stream rules; `condition` is the RFC 6120 stream error name."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


@dataclass(frozen=True)
class StreamOpened:
    attrs: dict[str, str]


@dataclass(frozen=True)
class StanzaReceived:
    element: ET.Element


@dataclass(frozen=True)
class StreamClosed:
    pass


Event = StreamOpened | StanzaReceived | StreamClosed


def _qname(name: str) -> str:
    # expat reports "uri local" with namespace_separator=" "; ElementTree wants "{uri}local".
    if " " in name:
        uri, local = name.split(" ", 1)
        return "{" + uri + "}" + local
    return name


class StreamParser:
    """Feed raw bytes of one XML stream; get back StreamOpened, StanzaReceived and StreamClosed."""

    def __init__(self, max_stanza: int = DEFAULT_MAX_STANZA) -> None:
        self.max_stanza = max_stanza
        self._events: list[Event] = []
        self._stack: list[ET.Element] = []
        self._text: list[str] = []
        self._fed = 0
        self._stanza_start = 0
        self._depth = 0
        self._closed = False
        p = expat.ParserCreate(namespace_separator=" ")
        p.buffer_text = True
        p.buffer_size = 65536
        p.ordered_attributes = False
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._chars
        p.StartDoctypeDeclHandler = self._refuse_dtd
        p.EntityDeclHandler = self._refuse_entity
        p.ProcessingInstructionHandler = self._refuse_pi
        p.ExternalEntityRefHandler = self._refuse_entity
        p.DefaultHandler = self._default
        self._parser = p

    def feed(self, data: bytes) -> list[Event]:
        """Parse `data`; return the complete events it finished. Raises XmlStreamError."""
        if self._closed:
            return []
        self._fed += len(data)
        try:
            self._parser.Parse(data, False)
        except XmlStreamError:
            raise
        except expat.ExpatError as exc:
            raise XmlStreamError("invalid-xml", str(exc)) from None
        # from the stream's level too: expat buffers an unfinished start tag whole
        if self._depth >= 1 and self._fed - self._stanza_start > self.max_stanza:
            raise XmlStreamError("policy-violation", f"stanza larger than {self.max_stanza} bytes")
        events, self._events = self._events, []
        return events

    # expat callbacks -----------------------------------------------------------------------
    def _start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self._depth
        self._depth = depth + 1
        if depth == 0:
            if name != STREAM_NS + " stream":
                raise XmlStreamError("invalid-namespace", f"root element {name!r} is not a stream")
            self._events.append(StreamOpened({_qname(k): v for k, v in attrs.items()}))
            self._stanza_start = self._parser.CurrentByteIndex
            return
        if attrs and any(" " in k for k in attrs):
            attrs = {_qname(k): v for k, v in attrs.items()}
        if depth == 1:
            self._stanza_start = self._parser.CurrentByteIndex
            tag = _qname(name)
            self._stack.append(ET.Element(tag, attrs))
        else:
            self._flush_text()
            self._stack.append(ET.SubElement(self._stack[-1], _qname(name), attrs))

    def _end(self, name: str) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._closed = True
            self._events.append(StreamClosed())
            return
        self._flush_text()
        el = self._stack.pop()
        if self._depth == 1:
            if self._parser.CurrentByteIndex - self._stanza_start > self.max_stanza:
                raise XmlStreamError("policy-violation",
                                     f"stanza larger than {self.max_stanza} bytes")
            self._stanza_start = self._parser.CurrentByteIndex
            self._events.append(StanzaReceived(el))

    def _chars(self, data: str) -> None:
        if self._depth >= 2:
            self._text.append(data)
            if len(self._text) > 4096:
                raise XmlStreamError("policy-violation", "too many text fragments")

    def _flush_text(self) -> None:
        if not self._text:
            return
        text = "".join(self._text)
        self._text = []
        el = self._stack[-1]
        if len(el):
            last = el[-1]
            last.tail = (last.tail or "") + text
        else:
            el.text = (el.text or "") + text

    def _refuse_dtd(self, *args: object) -> None:
        raise XmlStreamError("restricted-xml", "DTDs are not allowed")

    def _refuse_entity(self, *args: object) -> None:
        raise XmlStreamError("restricted-xml", "entity declarations are not allowed")

    def _refuse_pi(self, target: str, data: str) -> None:
        raise XmlStreamError("restricted-xml", "processing instructions are not allowed")

    def _default(self, data: str) -> None:
        # Reached for undeclared entity references (e.g. "&foo;"), comments and the like.
        if data.startswith("&"):
            raise XmlStreamError("restricted-xml", f"entity reference {data} is not allowed")
