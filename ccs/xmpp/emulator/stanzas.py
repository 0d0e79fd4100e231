"""Outbound XMPP for the emulator, built and escaped by lxml (never by string formatting)."""

from __future__ import annotations

import base64
import binascii
import json
import xml.etree.ElementTree as ET

from lxml import etree

from ccs.xmpp.emulator.xmlstream import CLIENT_NS, STREAM_NS

GCM_NS = "google:mobile:data"
GCM_TAG = f"{{{GCM_NS}}}gcm"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"
STANZA_ERR_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
STREAM_ERR_NS = "urn:ietf:params:xml:ns:xmpp-streams"
PING_NS = "urn:xmpp:ping"
MECHANISMS = ("X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN")

_STREAM_NSMAP = {None: CLIENT_NS, "stream": STREAM_NS}
_PLAIN_GCM = {None: GCM_NS}
_PREFIXED_GCM = {"data": GCM_NS}
_JSON_SEPARATORS = (",", ":")


def _bytes(el: etree._Element) -> bytes:
    return etree.tostring(el)


def _el(ns: str, local: str, parent: etree._Element | None = None, **attrs: str) -> etree._Element:
    """An element in namespace `ns`, declared as the default namespace when it starts a tree."""
    tag = f"{{{ns}}}{local}"
    if parent is None or etree.QName(parent).namespace != ns:
        el = etree.Element(tag, attrs, nsmap={None: ns})
        if parent is not None:
            parent.append(el)
        return el
    return etree.SubElement(parent, tag, attrs)


def stream_header(domain: str, stream_id: str) -> bytes:
    """`<?xml?><stream:stream ...>` left open, as XMPP requires."""
    el = etree.Element(f"{{{STREAM_NS}}}stream", nsmap=_STREAM_NSMAP)
    el.set("from", domain)
    el.set("id", stream_id)
    el.set("version", "1.0")
    el.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text = _bytes(el)
    assert text.endswith(b"/>")
    return b"<?xml version='1.0'?>" + text[:-2] + b">"


STREAM_END = b"</stream:stream>"


def _features(*children: etree._Element) -> bytes:
    el = etree.Element(f"{{{STREAM_NS}}}features", nsmap={"stream": STREAM_NS})
    for child in children:
        el.append(child)
    return _bytes(el)


def sasl_features() -> bytes:
    mechs = _el(SASL_NS, "mechanisms")
    for name in MECHANISMS:
        _el(SASL_NS, "mechanism", mechs).text = name
    return _features(mechs)


def bind_features() -> bytes:
    return _features(_el(BIND_NS, "bind"), _el(SESSION_NS, "session"))


def sasl_success() -> bytes:
    return _bytes(_el(SASL_NS, "success"))


def sasl_failure(condition: str = "not-authorized") -> bytes:
    el = _el(SASL_NS, "failure")
    _el(SASL_NS, condition, el)
    return _bytes(el)


def stream_error(condition: str, text: str = "") -> bytes:
    el = etree.Element(f"{{{STREAM_NS}}}error", nsmap={"stream": STREAM_NS})
    _el(STREAM_ERR_NS, condition, el)
    if text:
        _el(STREAM_ERR_NS, "text", el).text = text
    return _bytes(el) + STREAM_END


def iq_result(iq_id: str, child: etree._Element | None = None, frm: str | None = None) -> bytes:
    el = etree.Element("iq", type="result", id=iq_id)
    if frm:
        el.set("from", frm)
    if child is not None:
        el.append(child)
    return _bytes(el)


def bind_result(iq_id: str, jid: str) -> bytes:
    bind = _el(BIND_NS, "bind")
    _el(BIND_NS, "jid", bind).text = jid
    return iq_result(iq_id, bind)


def iq_error(iq_id: str, condition: str = "service-unavailable", kind: str = "cancel") -> bytes:
    el = etree.Element("iq", type="error", id=iq_id)
    err = etree.SubElement(el, "error", type=kind)
    _el(STANZA_ERR_NS, condition, err)
    return _bytes(el)


def gcm_message(payload: dict, prefixed: bool = False, **attrs: str) -> bytes:
    """`<message ...><gcm xmlns="google:mobile:data">JSON</gcm></message>` (or `data:gcm`)."""
    el = etree.Element("message", id=attrs.pop("id", ""))
    for key, value in attrs.items():
        el.set(key, value)
    nsmap = _PREFIXED_GCM if prefixed else _PLAIN_GCM
    gcm = etree.SubElement(el, GCM_TAG, nsmap=nsmap)
    gcm.text = json.dumps(payload, separators=_JSON_SEPARATORS, ensure_ascii=False)
    return _bytes(el)


def message_error(original: ET.Element, code: str, kind: str, condition: str, text: str) -> bytes:
    """`<message type="error">` echoing the original payload, with a stanza error."""
    el = _copy(original, None)
    for key in ("to", "from"):
        el.attrib.pop(key, None)
    el.set("type", "error")
    err = etree.SubElement(el, "error", code=code, type=kind)
    _el(STANZA_ERR_NS, condition, err)
    _el(STANZA_ERR_NS, "text", err).text = text
    return _bytes(el)


def _copy(src: ET.Element, parent: etree._Element | None) -> etree._Element:
    """Copy a parsed element into lxml; jabber:client becomes the stream's implicit namespace."""
    tag = src.tag
    if tag.startswith("{" + CLIENT_NS + "}"):
        local = tag[len(CLIENT_NS) + 2:]
        el = etree.Element(local) if parent is None else etree.SubElement(parent, local)
    elif tag.startswith("{"):
        ns, local = tag[1:].split("}", 1)
        el = _el(ns, local, parent)
    else:
        el = etree.Element(tag) if parent is None else etree.SubElement(parent, tag)
    for key, value in src.attrib.items():
        el.set(key, value)
    el.text = src.text
    el.tail = src.tail if parent is not None else None
    for child in src:
        _copy(child, el)
    return el


def gcm_text(stanza: ET.Element) -> str | None:
    """The JSON text of a stanza's gcm child, found by namespace whatever the prefix."""
    for child in stanza:
        if child.tag == GCM_TAG:
            return child.text or ""
    return None


def decode_plain(b64: str) -> tuple[str, str, str] | None:
    """SASL PLAIN `authzid NUL authcid NUL password`, or None if malformed."""
    try:
        raw = base64.b64decode(b64.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    parts = raw.split("\x00")
    if len(parts) != 3:
        return None
    return parts[0], parts[1], parts[2]
