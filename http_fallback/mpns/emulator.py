"""MpnsEmulator: the Microsoft Push Notification Service on loopback, one URI per channel.

Unauthenticated channels live under /throttledthirdparty/01.00/ and allow `daily_limit` (500)
posts a day; authenticated ones under /unthrottledthirdparty/01.00/ need TLS and a client
certificate (401 without one). Answers carry X-NotificationStatus, X-SubscriptionStatus and
X-DeviceConnectionStatus as MPNS did.
"""

from __future__ import annotations

import secrets
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from http_fallback.emulator_base import HttpEmulator, Reply, SeenRequest
from http_fallback.mpns.model import CLASS_CODES, MAX_PAYLOAD_BYTES

NS = "{WPNotification}"
TARGET_KIND = {"toast": "toast", "token": "tile", None: "raw"}
# scripted answer -> (status, notification, subscription, device connection)
SCRIPTS = {
    "QueueFull": (200, "QueueFull", "Active", "Connected"),
    "Suppressed": (200, "Suppressed", "Active", "Connected"),
    "Dropped": (200, "Dropped", "Active", "Connected"),
    "Throttled": (406, "Dropped", "Active", "Connected"),
    "Inactive": (412, "Dropped", "Active", "Inactive"),
    "Expired": (404, "Dropped", "Expired", "Connected"),
    "Unavailable": (503, None, None, None),
    "BadRequest": (400, None, None, None),
}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@dataclass
class Channel:
    name: str
    authenticated: bool = False
    expired: bool = False
    connection: str = "Connected"
    posts_today: int = 0
    scripted: deque[tuple[str, int | None]] = field(default_factory=deque)


@dataclass(frozen=True)
class Delivery:
    channel_uri: str
    kind: str  # toast, tile or raw
    notification_class: int
    message_id: str | None
    body: bytes
    fields: dict[str, Any]  # element name -> text, plus "@Id", "@Template", "@Version"


class MpnsEmulator(HttpEmulator):
    """Channels are made with new_channel(); unknown URIs answer 404 Expired."""

    def __init__(self, *, daily_limit: int = 500, auto_channels: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.daily_limit = daily_limit
        self.auto_channels = auto_channels  # unknown channel URIs become new subscriptions
        self.channels: dict[str, Channel] = {}
        self.delivered: list[Delivery] = []
        self.by_channel: dict[str, list[Delivery]] = defaultdict(list)

    # channels and scripting
    def new_channel(self, *, authenticated: bool = False) -> str:
        """A fresh subscription; returns its channel URI."""
        name = secrets.token_urlsafe(18)
        self.channels[name] = Channel(name, authenticated=authenticated)
        base = "unthrottledthirdparty" if authenticated else "throttledthirdparty"
        return f"{self.origin}/{base}/01.00/{name}"

    def channel(self, uri: str) -> Channel:
        return self.channels[uri.rsplit("/", 1)[-1]]

    def script(self, uri: str, *answers: str, retry_after: int | None = None) -> None:
        """The next posts to this channel get these answers (keys of SCRIPTS), one each."""
        for answer in answers:
            if answer not in SCRIPTS:
                raise ValueError(f"unknown scripted answer {answer!r}; one of {sorted(SCRIPTS)}")
            self.channel(uri).scripted.append((answer, retry_after))

    def expire(self, uri: str) -> None:
        self.channel(uri).expired = True

    # serving
    def handle(self, request: SeenRequest) -> Reply:
        parts = request.path.strip("/").split("/")
        channel = self.channels.get(parts[-1]) if len(parts) == 3 else None
        if channel is None and self.auto_channels and len(parts) == 3 and parts[1] == "01.00" \
                and parts[0] in ("throttledthirdparty", "unthrottledthirdparty"):
            channel = self.channels[parts[2]] = Channel(
                parts[2], authenticated=parts[0] == "unthrottledthirdparty")
        if channel is None or channel.expired:
            return _answer(404, "Dropped", "Expired", "Connected")
        if request.method != "POST":
            return Reply(405, b"", {"Allow": "POST"})
        authenticated_path = parts[0] == "unthrottledthirdparty"
        if channel.authenticated != authenticated_path:
            return _answer(404, "Dropped", "Expired", "Connected")
        if channel.authenticated and not request.peer_cert:
            return Reply(401, b"")
        problem, delivery = self._validate(request)
        if problem:
            return Reply(400, problem.encode(), {"Content-Type": "text/plain"})
        if channel.scripted:
            name, retry_after = channel.scripted.popleft()
            status, note, sub, conn = SCRIPTS[name]
            reply = _answer(status, note, sub, conn)
            if retry_after is not None:
                reply.headers["Retry-After"] = str(retry_after)
            if name == "Expired":
                channel.expired = True
            return reply
        if not channel.authenticated and channel.posts_today >= self.daily_limit:
            return _answer(406, "Dropped", "Active", channel.connection)
        channel.posts_today += 1
        assert delivery is not None
        self.delivered.append(delivery)
        self.by_channel[channel.name].append(delivery)
        return _answer(200, "Received", "Active", channel.connection)

    def _validate(self, request: SeenRequest) -> tuple[str | None, Delivery | None]:
        target = request.header("x-windowsphone-target")
        if target not in TARGET_KIND:
            return f"X-WindowsPhone-Target: {target!r} is not toast or token", None
        kind = TARGET_KIND[target]
        try:
            klass = int(request.header("x-notificationclass") or "")
        except ValueError:
            return "X-NotificationClass: missing or not a number", None
        if klass not in CLASS_CODES[kind]:
            return f"X-NotificationClass: {klass} is not valid for {kind}", None
        message_id = request.header("x-messageid")
        if message_id is not None:
            try:
                uuid.UUID(message_id)
            except ValueError:
                return "X-MessageID: not a UUID", None
        if len(request.body) > MAX_PAYLOAD_BYTES:
            return f"payload is {len(request.body)} bytes; at most {MAX_PAYLOAD_BYTES}", None
        uri = self.origin + request.path
        if kind == "raw":
            return None, Delivery(uri, kind, klass, message_id, request.body, {})
        ctype = (request.header("content-type") or "").split(";")[0].strip().lower()
        if ctype != "text/xml":
            return f"Content-Type: {ctype!r}; toast and tile need text/xml", None
        try:
            root = etree.fromstring(request.body, _PARSER)
        except etree.XMLSyntaxError as exc:
            return f"bad XML: {exc}", None
        expected = "Toast" if kind == "toast" else "Tile"
        if root.tag != f"{NS}Notification" or len(root) != 1 or root[0].tag != f"{NS}{expected}":
            return f"XML: expected wp:Notification/wp:{expected} in namespace WPNotification", None
        body = root[0]
        fields: dict[str, Any] = {f"@{k}": v for k, v in body.attrib.items()}
        if root.get("Version"):
            fields["@Version"] = root.get("Version")
        for child in body:
            if not isinstance(child.tag, str) or not child.tag.startswith(NS):
                return f"XML: unexpected element {child.tag!r}", None
            name = child.tag[len(NS):]
            fields[name] = {"Action": "Clear"} if child.get("Action") == "Clear" else (
                child.text or "")
        return None, Delivery(uri, kind, klass, message_id, request.body, fields)


def _answer(status: int, note: str | None, sub: str | None, conn: str | None) -> Reply:
    headers = {}
    if note:
        headers["X-NotificationStatus"] = note
    if sub:
        headers["X-SubscriptionStatus"] = sub
    if conn:
        headers["X-DeviceConnectionStatus"] = conn
    return Reply(status, b"", headers)
