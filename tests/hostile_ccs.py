"""A scripted hostile CCS server for tests: real TLS, a real XMPP login, then an attack.

Written from RFC 6120 and docs/providers/ccs.rst, not from the emulator: a byte-level
script, so it can send what no well-behaved server (and no XML library) would.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape, unescape

from gevent.event import Event
from gevent.server import StreamServer

from ccs.transport.tls import server_context

HEADER = (b"<?xml version='1.0'?><stream:stream from='gcm.googleapis.com' id='h%d' "
          b"version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
SASL = (b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        b"<mechanism>PLAIN</mechanism></mechanisms></stream:features>")
SUCCESS = b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
FAILURE = b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"
BIND = (b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
        b"<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></stream:features>")
GCM_RE = re.compile(rb"<gcm xmlns=\"google:mobile:data\">(.*?)</gcm>", re.S)
AUTH_RE = re.compile(rb"<auth[^>]*>([^<]*)</auth>")
ID_RE = re.compile(rb"<iq[^>]* id=\"([^\"]+)\"")


def gcm(payload: Any) -> bytes:
    """One message stanza carrying `payload` (JSON text, or an object to dump)."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return (b"<message><gcm xmlns='google:mobile:data'>" + escape(text).encode()
            + b"</gcm></message>")


def ack(message: dict[str, Any]) -> bytes:
    return gcm({"message_type": "ack", "from": message.get("to"),
                "message_id": message["message_id"]})


Attack = Callable[["Link", dict[str, Any]], None]


class Link:
    """One accepted connection: a buffer and helpers to wait for what the client sends."""

    def __init__(self, sock: Any, number: int) -> None:
        self.sock = sock
        self.number = number
        self.buf = b""

    def until(self, pattern: bytes | re.Pattern[bytes]) -> re.Match[bytes] | bool:
        """Read until `pattern` is in the buffer; consume up to its end. False on EOF."""
        while True:
            m = (re.search(re.escape(pattern), self.buf) if isinstance(pattern, bytes)
                 else pattern.search(self.buf))
            if m:
                self.buf = self.buf[m.end():]
                return m
            data = self.sock.recv(65536)
            if not data:
                return False
            self.buf += data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_message(self) -> dict[str, Any] | None:
        m = self.until(GCM_RE)
        return json.loads(unescape(m.group(1).decode())) if m else None


class HostileCcs:
    """Connection 1 logs in, takes one downstream message, then runs `attack` on it (or, with
    `attack_prolog`, sends that instead of the stream header). Later connections ack everything."""

    def __init__(self, pki: Any, attack: Attack | None = None,
                 attack_prolog: bytes | None = None, bad_connections: int = 1) -> None:
        self.attack = attack
        self.attack_prolog = attack_prolog
        self.bad_connections = bad_connections
        self.auth_blobs: list[bytes] = []
        self.received: list[dict[str, Any]] = []
        self.connections = 0
        self.attacked = Event()
        self.accept_key: str | None = None  # a server key other than this is refused
        self._numbers = itertools.count(1)
        self.server = StreamServer(("127.0.0.1", 0), self._handle,
                                   ssl_context=server_context(pki.cert_file, pki.key_file))

    @property
    def port(self) -> int:
        return self.server.server_port

    def __enter__(self) -> HostileCcs:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(timeout=1)

    def _handle(self, sock: Any, _addr: Any) -> None:
        link = Link(sock, next(self._numbers))
        self.connections += 1
        hostile = link.number <= self.bad_connections
        try:
            if not link.until(b"<stream:stream"):
                return
            if hostile and self.attack_prolog is not None:
                link.send(self.attack_prolog)
                self.attacked.set()
                link.until(b"\x00never")
                return
            if not self._login(link):
                return
            message = link.next_message()
            if message is None:
                return
            self.received.append(message)
            if hostile and self.attack is not None:
                self.attack(link, message)
                self.attacked.set()
                link.until(b"\x00never")  # hold the socket until the client closes it
                return
            while message is not None:
                link.send(ack(message))
                message = link.next_message()
                if message is not None:
                    self.received.append(message)
        except OSError:
            pass
        finally:
            sock.close()

    def _login(self, link: Link) -> bool:
        link.until(b">")
        link.send(HEADER % link.number + SASL)
        m = link.until(AUTH_RE)
        if not m:
            return False
        self.auth_blobs.append(m.group(1))
        if self.accept_key is not None:
            _authzid, _authcid, password = base64.b64decode(m.group(1)).split(b"\x00")
            if password.decode() != self.accept_key:
                link.send(FAILURE)
                return False
        link.send(SUCCESS)
        if not link.until(b"<stream:stream") or not link.until(b">"):
            return False
        link.send(HEADER % (link.number + 100) + BIND)
        for expected in (b"bind1", b"sess1"):
            m = link.until(ID_RE)
            if not m or m.group(1) != expected:
                return False
            jid = b"<jid>1@gcm.googleapis.com/r</jid>" if expected == b"bind1" else b""
            body = (b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>" + jid + b"</bind>"
                    if jid else b"")
            link.send(b"<iq type='result' id='" + expected + b"'>" + body + b"</iq>")
        return True
