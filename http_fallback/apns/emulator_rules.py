"""What the APNs emulator checks in a request, written from Apple's provider API documentation
(independently of our client's own checks). Pure: headers and body in, (status, reason) out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

STATUS_OF = {
    "BadCollapseId": 400, "BadDeviceToken": 400, "BadExpirationDate": 400, "BadMessageId": 400,
    "BadPriority": 400, "BadTopic": 400, "DeviceTokenNotForTopic": 400, "DuplicateHeaders": 400,
    "IdleTimeout": 400, "InvalidPushType": 400, "MissingDeviceToken": 400, "MissingTopic": 400,
    "PayloadEmpty": 400, "TopicDisallowed": 400, "BadPayload": 400,
    "BadCertificate": 403, "BadCertificateEnvironment": 403, "ExpiredProviderToken": 403,
    "Forbidden": 403, "InvalidProviderToken": 403, "MissingProviderToken": 403,
    "UnrelatedKeyIdInToken": 403, "BadEnvironmentKeyIdInToken": 403,
    "BadPath": 404, "MethodNotAllowed": 405, "ExpiredToken": 410, "Unregistered": 410,
    "PayloadTooLarge": 413, "TooManyProviderTokenUpdates": 429, "TooManyRequests": 429,
    "InternalServerError": 500, "ServiceUnavailable": 503, "Shutdown": 503,
}
PUSH_TYPES = {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm",
              "liveactivity", "pushtotalk", "widgets"}
SUFFIX = {"voip": ".voip", "complication": ".complication",
          "fileprovider": ".pushkit.fileprovider", "location": ".location-query",
          "liveactivity": ".push-type.liveactivity", "pushtotalk": ".voip-ptt"}
_TOKEN = re.compile(rb"^[0-9a-fA-F]{64,200}$")
_UUID = re.compile(rb"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   rb"[0-9a-fA-F]{12}$")


# RFC 9113 8.2.2: headers that belong to a connection, not to an HTTP/2 message.
_CONNECTION_HEADERS = frozenset((b"connection", b"keep-alive", b"proxy-connection",
                                 b"transfer-encoding", b"upgrade"))
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority"))


def malformed(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a request header block is malformed (RFC 9113 8.2 and 8.3.1), else None.

    The emulator's own check, in place of h2's generic one (which costs more CPU per request
    than everything else the emulator does): names lowercase, no connection-specific header,
    te only "trailers", request pseudo-headers only, each once, all before the regular ones,
    :method, :scheme and :path present. A malformed request is a stream error
    (PROTOCOL_ERROR), before any APNs rule looks at it.
    """
    pseudo: set[bytes] = set()
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return f"pseudo-header {name!r} after a regular header"
            if name not in _REQUEST_PSEUDO or name in pseudo:
                return f"pseudo-header {name!r} unknown or repeated"
            pseudo.add(name)
            continue
        regular = True
        if name.lower() != name:
            return f"header name {name!r} is not lowercase"
        if name in _CONNECTION_HEADERS:
            return f"connection-specific header {name!r}"
        if name == b"te" and value != b"trailers":
            return "te other than trailers"
    if len(pseudo & {b":method", b":scheme", b":path"}) < 3:
        return "missing :method, :scheme or :path"
    return None


def check_request(headers: Iterable[tuple[bytes, bytes]], body: bytes,
                  topics: frozenset[str] | None, topic_required: bool
                  ) -> tuple[str | None, str | None, bytes | None]:
    """(reason or None, topic, token) for a request, checked in the order APNs documents."""
    seen: dict[bytes, bytes] = {}
    for k, v in headers:
        if k in seen:
            return "DuplicateHeaders", None, None
        seen[k] = v
    if seen.get(b":method") != b"POST":
        return "MethodNotAllowed", None, None
    path = seen.get(b":path", b"")
    if not path.startswith(b"/3/device/"):
        return "BadPath", None, None
    token = path[len(b"/3/device/"):]
    if not token:
        return "MissingDeviceToken", None, None
    if not _TOKEN.match(token) or len(token) % 2:
        return "BadDeviceToken", None, token
    raw_topic = seen.get(b"apns-topic")
    topic = raw_topic.decode("utf-8", "replace") if raw_topic else None
    push_type = seen.get(b"apns-push-type", b"alert").decode("ascii", "replace")
    if push_type not in PUSH_TYPES:
        return "InvalidPushType", topic, token
    if topic is None:
        if topic_required:
            return "MissingTopic", None, token
    elif topics is not None:
        suffix = SUFFIX.get(push_type, "")
        if suffix and not topic.endswith(suffix):
            return "BadTopic", topic, token
        base = topic[: -len(suffix)] if suffix else topic
        if base not in topics:
            return "TopicDisallowed", topic, token
    priority = seen.get(b"apns-priority", b"10")
    if priority not in (b"10", b"5", b"1"):
        return "BadPriority", topic, token
    if push_type == "background" and priority != b"5":
        return "BadPriority", topic, token
    expiration = seen.get(b"apns-expiration")
    if expiration is not None and not expiration.isdigit():
        return "BadExpirationDate", topic, token
    apns_id = seen.get(b"apns-id")
    if apns_id is not None and not _UUID.match(apns_id):
        return "BadMessageId", topic, token
    collapse = seen.get(b"apns-collapse-id")
    if collapse is not None and len(collapse) > 64:
        return "BadCollapseId", topic, token
    if not body:
        return "PayloadEmpty", topic, token
    if len(body) > (5120 if push_type == "voip" else 4096):
        return "PayloadTooLarge", topic, token
    try:
        doc = json.loads(body)
    except ValueError:
        return "BadPayload", topic, token
    if not isinstance(doc, dict):
        return "BadPayload", topic, token
    return None, topic, token
