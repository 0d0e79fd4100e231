"""APNs provider API rules (pure): request building and checks, reply parsing, reason classes.

No sockets and no clock: callers hand in the time where it matters.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ccs.transport.h2rules import backoff, goaway_reason  # noqa: F401 - shared
from http_fallback.apns.model import TOPIC_SUFFIX, Notification, NotificationError, PushType

MAX_PAYLOAD = 4096
MAX_PAYLOAD_VOIP = 5120
MAX_COLLAPSE_ID = 64
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-_]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # what json.dumps builds
_VARIANT = "89ab" * 4  # a hex digit's two low bits under the RFC 4122 variant bits


class ReasonClass(StrEnum):
    REQUEST = "request"  # a bug in the request: fix the code, never retry
    CONFIGURATION = "configuration"  # topic, certificate or key problem
    TOKEN_GONE = "token_gone"  # the device token is dead or invalid
    CONNECTION = "connection"  # this connection is unusable: retry on a new one
    BACKOFF = "backoff"  # too many to this token: retry later
    RETRYABLE = "retryable"  # server trouble: retry elsewhere


REASONS: dict[str, ReasonClass] = {}
for _cls, _names in {
    ReasonClass.REQUEST: "BadCollapseId BadExpirationDate BadMessageId BadPriority "
    "DuplicateHeaders "
    "InvalidPushType MissingDeviceToken MissingTopic PayloadEmpty BadPath MethodNotAllowed "
    "PayloadTooLarge",
    ReasonClass.CONFIGURATION: "BadTopic TopicDisallowed DeviceTokenNotForTopic BadCertificate "
    "BadCertificateEnvironment Forbidden InvalidProviderToken MissingProviderToken "
    "BadEnvironmentKeyIdInToken",
    ReasonClass.TOKEN_GONE: "Unregistered ExpiredToken BadDeviceToken",
    ReasonClass.CONNECTION: "ExpiredProviderToken UnrelatedKeyIdInToken IdleTimeout "
    "TooManyProviderTokenUpdates",
    ReasonClass.BACKOFF: "TooManyRequests",
    ReasonClass.RETRYABLE: "InternalServerError ServiceUnavailable Shutdown",
}.items():
    for _name in _names.split():
        REASONS[_name] = _cls

_BY_STATUS = {400: ReasonClass.REQUEST, 403: ReasonClass.CONFIGURATION, 404: ReasonClass.REQUEST,
              405: ReasonClass.REQUEST, 410: ReasonClass.TOKEN_GONE, 413: ReasonClass.REQUEST,
              429: ReasonClass.BACKOFF}


def classify(reason: str | None, status: int) -> ReasonClass:
    """The class of a rejection; unknown reasons fall back on the HTTP status."""
    if reason in REASONS:
        return REASONS[reason]  # type: ignore[index]
    return _BY_STATUS.get(status, ReasonClass.RETRYABLE)


RETRY_CLASSES = frozenset({ReasonClass.CONNECTION, ReasonClass.BACKOFF, ReasonClass.RETRYABLE})


@dataclass(slots=True)
class Prepared:
    """A checked request, ready for any connection: path, apns-* headers, body."""

    token: str
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    apns_id: str
    push_type: PushType


def payload_limit(push_type: PushType) -> int:
    return MAX_PAYLOAD_VOIP if push_type is PushType.VOIP else MAX_PAYLOAD


def topic_for(bundle: str, push_type: PushType) -> str:
    """The apns-topic for a bundle id: adds the push type's suffix unless already there."""
    suffix = TOPIC_SUFFIX.get(push_type, "")
    return bundle if not suffix or bundle.endswith(suffix) else bundle + suffix


def check_token(token: str | None) -> str:
    if not token:
        raise NotificationError("device", "missing device token")
    if not isinstance(token, str):
        raise NotificationError("device", "must be a string of hex digits")
    token = token.replace(" ", "").replace("<", "").replace(">", "")
    if not _HEX.match(token) or len(token) % 2 or not 32 <= len(token) <= 200:
        raise NotificationError("device", "must be an even number (32-200) of hex digits")
    return token.lower()


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (emoji stay as themselves; the size counts bytes)."""
    return _JSON.encode(payload).encode("utf-8")


def new_apns_id() -> str:
    """A random (version 4) lowercase UUID, as str(uuid.uuid4()) but in a third of the time."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16)]}{h[17:20]}-{h[20:]}"


_FIXED: dict[tuple[str, PushType, int], list[tuple[bytes, bytes]]] = {}


def _fixed_headers(bundle: Any, push_type: PushType, priority: Any) -> list[tuple[bytes, bytes]]:
    """The checked apns-push-type, apns-topic and apns-priority headers (cached: a sender
    uses few combinations, and checking and encoding them was a tenth of prepare's time)."""
    if not bundle:
        raise NotificationError("topic", "no topic (bundle id) given and no default configured")
    if not isinstance(bundle, str):
        raise NotificationError("topic", "a bundle id is letters, digits, '.', '-' and '_'")
    if not isinstance(priority, int) or isinstance(priority, bool) \
            or priority not in (10, 5, 1):
        raise NotificationError("priority", "must be 10, 5 or 1")
    key = (bundle, push_type, priority)
    fixed = _FIXED.get(key)
    if fixed is None:
        if not _TOPIC.match(bundle):
            raise NotificationError("topic", "a bundle id is letters, digits, '.', '-' and '_'")
        if push_type is PushType.BACKGROUND and priority != 5:
            raise NotificationError("priority", "background notifications must use priority 5")
        fixed = [(b"apns-push-type", push_type.value.encode()),
                 (b"apns-topic", topic_for(bundle, push_type).encode()),
                 (b"apns-priority", str(priority).encode())]
        if len(_FIXED) >= 256:
            _FIXED.clear()
        _FIXED[key] = fixed
    return fixed


def prepare(n: Notification, default_topic: str | None) -> Prepared:
    """Check a notification as APNs would and build its request; raises NotificationError."""
    token = check_token(n.device)
    push_type = n.effective_push_type()
    priority = n.priority if n.priority is not None else (
        5 if push_type is PushType.BACKGROUND else 10)
    fixed = _fixed_headers(n.topic or default_topic, push_type, priority)
    if isinstance(n.badge, bool) or (n.badge is not None and not isinstance(n.badge, int)):
        raise NotificationError("badge", "must be an integer")
    apns_id = n.apns_id
    if not apns_id:
        apns_id = new_apns_id()
    elif not isinstance(apns_id, str) or not _UUID.match(apns_id):
        raise NotificationError("apns_id", "must be a lowercase UUID")
    try:
        body = encode_payload(n.to_payload())
    except (TypeError, ValueError) as e:
        if isinstance(e, NotificationError):
            raise
        raise NotificationError("payload", f"not JSON serialisable: {e}") from None
    limit = payload_limit(push_type)
    if len(body) > limit:
        raise NotificationError(
            "payload", f"{len(body)} bytes exceeds the {limit}-byte limit for {push_type} pushes")
    headers = [*fixed, (b"apns-id", apns_id.encode())]
    if n.expiry is not None:
        if isinstance(n.expiry, bool) or not isinstance(n.expiry, int) or n.expiry < 0:
            raise NotificationError("expiry", "must be epoch seconds (0 = do not store)")
        headers.append((b"apns-expiration", str(n.expiry).encode()))
    if n.collapse_id is not None:
        if not isinstance(n.collapse_id, str):
            raise NotificationError("collapse_id", "must be a string")
        cid = n.collapse_id.encode("utf-8")
        if not cid or len(cid) > MAX_COLLAPSE_ID or _CONTROL.search(n.collapse_id):
            raise NotificationError(
                "collapse_id", f"must be 1-{MAX_COLLAPSE_ID} bytes without control characters")
        headers.append((b"apns-collapse-id", cid))
    return Prepared(token, b"/3/device/" + token.encode(), headers, body, apns_id, push_type)


@dataclass(frozen=True, slots=True)
class Reply:
    """What APNs answered on one stream."""

    status: int
    apns_id: str | None = None
    reason: str | None = None
    timestamp_ms: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def parse_reply(status: int, headers: dict[bytes, bytes], body: bytes) -> Reply:
    apns_id = headers.get(b"apns-id")
    sid = apns_id.decode("ascii", "replace") if apns_id else None
    if status == 200:
        return Reply(200, sid)
    doc = _json_object(body)
    reason = doc.get("reason")
    reason = reason if isinstance(reason, str) and reason else None
    return Reply(status, sid, reason or f"HTTP{status}", _timestamp_ms(doc.get("timestamp")))


# the latest instant a datetime can hold (9999-12-31), in milliseconds
MAX_TIMESTAMP_MS = 253402300799999


def _timestamp_ms(raw: Any) -> int | None:
    """Milliseconds since the epoch from an integer (or integer string); None if unusable."""
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 15:
        raw = int(raw)
    elif isinstance(raw, float) and raw.is_integer() and 0 <= raw <= MAX_TIMESTAMP_MS:
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_TIMESTAMP_MS:
        return None
    return raw


def _json_object(data: bytes | None) -> dict[str, Any]:
    """`data` parsed as a JSON object, else an empty dict (never raises)."""
    if not data:
        return {}
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def token_needs_refresh(issued_at: float, now: float, refresh_after: float,
                        min_interval: float = 20 * 60) -> bool:
    """A connection's JWT is replaced after `refresh_after`, never sooner than `min_interval`."""
    age = now - issued_at
    return age >= max(refresh_after, min_interval)


DESCRIPTIONS = {
    "BadDeviceToken": "the device token is malformed or belongs to the other environment",
    "Unregistered": "the device token is no longer active for this topic",
    "ExpiredToken": "the device token has expired",
    "TooManyRequests": "too many notifications to this device token; slow down",
    "ExpiredProviderToken": "the provider token is older than an hour; a new one is needed",
    "InvalidProviderToken": "the provider token's signature, key id or team id is wrong",
    "TooManyProviderTokenUpdates": "the provider token changed too often on one connection",
    "PayloadTooLarge": "the payload is larger than APNs accepts",
    "BadTopic": "the topic is not valid",
    "TopicDisallowed": "pushing to this topic is not allowed",
    "DeviceTokenNotForTopic": "the device token does not match the topic",
    "InternalServerError": "APNs had an internal error",
    "ServiceUnavailable": "APNs is unavailable for now",
    "Shutdown": "the APNs server is shutting down",
    "Timeout": "no answer came before the request deadline",
}
