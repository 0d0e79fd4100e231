"""Client-side checks of a v1 Message wire dict before it is sent (pure).

Every failure is a MessageError naming the wire field ("message.android.ttl"), so a caller can
fix the input without reading a traceback. The limits are FCM's published ones.
"""

from __future__ import annotations

import re
from typing import Any

from ccs.limits import MAX_TTL

MAX_PAYLOAD_BYTES = 4096
MAX_TOPIC_PAYLOAD_BYTES = 2048
MAX_CONDITION_TOPICS = 5
TOPIC_RE = re.compile(r"^(/topics/)?[a-zA-Z0-9\-_.~%]+$")
LABEL_RE = re.compile(r"^[a-zA-Z0-9\-_.~%]{1,50}$")
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
DURATION_RE = re.compile(r"^\d+(\.\d{1,9})?s$")
CONDITION_TOPIC_RE = re.compile(r"'([^']*)'\s+in\s+topics")
CONDITION_RE = re.compile(r"^[\s()!&|]*('[a-zA-Z0-9\-_.~%]+'\s+in\s+topics[\s()!&|]*)+$")
RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})
ANDROID_PRIORITIES = frozenset({"NORMAL", "HIGH"})
NOTIFICATION_PRIORITIES = frozenset({"PRIORITY_UNSPECIFIED", "PRIORITY_MIN", "PRIORITY_LOW",
                                     "PRIORITY_DEFAULT", "PRIORITY_HIGH", "PRIORITY_MAX"})
VISIBILITIES = frozenset({"VISIBILITY_UNSPECIFIED", "PRIVATE", "PUBLIC", "SECRET"})
PROXIES = frozenset({"PROXY_UNSPECIFIED", "ALLOW", "DENY", "IF_PRIORITY_LOWERED"})
MESSAGE_FIELDS = frozenset({"token", "topic", "condition", "data", "notification", "android",
                            "apns", "webpush", "fcm_options", "fid", "name"})
NOTIFICATION_FIELDS = frozenset({"title", "body", "image"})
ANDROID_FIELDS = frozenset({"collapse_key", "priority", "ttl", "restricted_package_name", "data",
                            "notification", "fcm_options", "direct_boot_ok",
                            "bandwidth_constrained_ok", "restricted_satellite_ok"})
ANDROID_NOTIFICATION_FIELDS = frozenset({
    "title", "body", "icon", "color", "sound", "tag", "click_action", "body_loc_key",
    "body_loc_args", "title_loc_key", "title_loc_args", "channel_id", "ticker", "sticky",
    "event_time", "local_only", "notification_priority", "default_sound",
    "default_vibrate_timings", "default_light_settings", "vibrate_timings", "visibility",
    "notification_count", "light_settings", "image", "proxy"})
APNS_FIELDS = frozenset({"headers", "payload", "fcm_options", "live_activity_token"})
WEBPUSH_FIELDS = frozenset({"headers", "data", "notification", "fcm_options"})
OPTIONS_FIELDS = {"message": frozenset({"analytics_label"}),
                  "message.android": frozenset({"analytics_label"}),
                  "message.apns": frozenset({"analytics_label", "image"}),
                  "message.webpush": frozenset({"link", "analytics_label"})}


class MessageError(ValueError):
    """The message cannot be sent as it is; `field` is the wire path of the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _obj(value: Any, field: str, known: frozenset[str] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MessageError(field, "must be an object")
    if known is not None:
        unknown = sorted(k for k in value if k not in known)
        if unknown:
            raise MessageError(f"{field}.{unknown[0]}", "unknown field")
    return value


def _str(parent: dict[str, Any], key: str, field: str, nonempty: bool = False) -> str | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MessageError(f"{field}.{key}", "must be a string")
    if nonempty and not value:
        raise MessageError(f"{field}.{key}", "must not be empty")
    return value


def _bool(parent: dict[str, Any], key: str, field: str) -> None:
    if key in parent and parent[key] is not None and not isinstance(parent[key], bool):
        raise MessageError(f"{field}.{key}", "must be true or false")


def _str_list(parent: dict[str, Any], key: str, field: str) -> None:
    value = parent.get(key)
    if value is None:
        return
    if not isinstance(value, list):
        raise MessageError(f"{field}.{key}", "must be a list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise MessageError(f"{field}.{key}[{i}]", "must be a string")


def _str_map(value: Any, field: str) -> dict[str, str]:
    value = _obj(value, field)
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise MessageError(field, "keys must be non-empty strings")
        if not isinstance(item, str):
            raise MessageError(f"{field}.{key}", f"must be a string, not {type(item).__name__}")
    return value


def _enum(parent: dict[str, Any], key: str, field: str, allowed: frozenset[str]) -> None:
    value = _str(parent, key, field)
    if value is not None and value.upper() not in allowed:
        raise MessageError(f"{field}.{key}", f"must be one of {', '.join(sorted(allowed))}")


def _label(parent: dict[str, Any], field: str) -> None:
    options = parent.get("fcm_options")
    if options is None:
        return
    options = _obj(options, f"{field}.fcm_options", OPTIONS_FIELDS[field])
    label = _str(options, "analytics_label", f"{field}.fcm_options")
    if label is not None and not LABEL_RE.match(label):
        raise MessageError(f"{field}.fcm_options.analytics_label",
                           "must match [a-zA-Z0-9-_.~%]{1,50}")


def ttl_seconds(text: str, field: str = "message.android.ttl") -> float:
    """Seconds of a Duration string such as "3600s"; MessageError when malformed."""
    if not isinstance(text, str) or not DURATION_RE.match(text):
        raise MessageError(field, 'must be a duration in seconds such as "3600s"')
    seconds = float(text[:-1])
    if seconds > MAX_TTL:
        raise MessageError(field, f"must be at most {MAX_TTL}s (four weeks)")
    return seconds


def _data(value: Any, field: str) -> int:
    data = _str_map(value, field)
    size = 0
    for key, item in data.items():
        lowered = key.lower()
        if lowered in RESERVED_DATA_KEYS or lowered.startswith(("google", "gcm")):
            raise MessageError(f"{field}.{key}", "is a reserved key")
        size += len(key.encode()) + len(item.encode())
    return size


def _target(msg: dict[str, Any]) -> str:
    given = [k for k in ("token", "topic", "condition", "fid") if msg.get(k) is not None]
    if len(given) != 1:
        raise MessageError("message", "needs exactly one of token, topic or condition"
                           + (f" (got {', '.join(given)})" if given else ""))
    kind = given[0]
    value = _str(msg, kind, "message", nonempty=True)
    assert value is not None
    if kind == "topic" and not TOPIC_RE.match(value):
        raise MessageError("message.topic", "must match [a-zA-Z0-9-_.~%]+")
    if kind == "condition":
        topics = CONDITION_TOPIC_RE.findall(value)
        if not CONDITION_RE.match(value):
            raise MessageError("message.condition", "must be like \"'a' in topics && "
                               "('b' in topics || 'c' in topics)\"")
        if len(topics) > MAX_CONDITION_TOPICS:
            raise MessageError("message.condition", "may name at most 5 topics")
    return kind


def _android(value: Any) -> int:
    field = "message.android"
    android = _obj(value, field, ANDROID_FIELDS)
    for key in ("collapse_key", "restricted_package_name"):
        _str(android, key, field)
    _enum(android, "priority", field, ANDROID_PRIORITIES)
    if android.get("ttl") is not None:
        ttl_seconds(android["ttl"])
    for key in ("direct_boot_ok", "bandwidth_constrained_ok", "restricted_satellite_ok"):
        _bool(android, key, field)
    size = _data(android["data"], f"{field}.data") if android.get("data") is not None else 0
    _label(android, field)
    note = android.get("notification")
    if note is not None:
        nf = f"{field}.notification"
        note = _obj(note, nf, ANDROID_NOTIFICATION_FIELDS)
        for key in ("title", "body", "icon", "sound", "tag", "click_action", "body_loc_key",
                    "title_loc_key", "channel_id", "image", "ticker", "event_time"):
            _str(note, key, nf)
        for key in ("body_loc_args", "title_loc_args"):
            _str_list(note, key, nf)
        for key in ("sticky", "local_only", "default_sound", "default_vibrate_timings",
                    "default_light_settings"):
            _bool(note, key, nf)
        color = _str(note, "color", nf)
        if color is not None and not COLOR_RE.match(color):
            raise MessageError(f"{nf}.color", "must be in #rrggbb format")
        if note.get("body_loc_args") and not note.get("body_loc_key"):
            raise MessageError(f"{nf}.body_loc_key", "is required with body_loc_args")
        if note.get("title_loc_args") and not note.get("title_loc_key"):
            raise MessageError(f"{nf}.title_loc_key", "is required with title_loc_args")
        _enum(note, "notification_priority", nf, NOTIFICATION_PRIORITIES)
        _enum(note, "visibility", nf, VISIBILITIES)
        _enum(note, "proxy", nf, PROXIES)
        count = note.get("notification_count")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
            raise MessageError(f"{nf}.notification_count", "must be an integer")
        for i, timing in enumerate(note.get("vibrate_timings") or ()):
            _duration(timing, f"{nf}.vibrate_timings[{i}]")
        if note.get("light_settings") is not None:
            _light(note["light_settings"], f"{nf}.light_settings")
    return size


def _duration(value: Any, field: str) -> None:
    if not isinstance(value, str) or not DURATION_RE.match(value):
        raise MessageError(field, 'must be a duration such as "0.5s"')


def _light(value: Any, field: str) -> None:
    light = _obj(value, field, frozenset({"color", "light_on_duration", "light_off_duration"}))
    for key in ("light_on_duration", "light_off_duration"):
        if light.get(key) is not None:
            _duration(light[key], f"{field}.{key}")
    color = light.get("color")
    if color is not None:
        color = _obj(color, f"{field}.color", frozenset({"red", "green", "blue", "alpha"}))
        for key, part in color.items():
            if isinstance(part, bool) or not isinstance(part, (int, float)) \
                    or not 0 <= part <= 1:
                raise MessageError(f"{field}.color.{key}", "must be a number from 0 to 1")


def _apns(value: Any) -> None:
    field = "message.apns"
    apns = _obj(value, field, APNS_FIELDS)
    if apns.get("headers") is not None:
        _str_map(apns["headers"], f"{field}.headers")
    payload = apns.get("payload")
    if payload is not None:
        payload = _obj(payload, f"{field}.payload")
        if "aps" in payload:
            _obj(payload["aps"], f"{field}.payload.aps")
    _label(apns, field)
    if apns.get("fcm_options") is not None:
        _str(apns["fcm_options"], "image", f"{field}.fcm_options")
    _str(apns, "live_activity_token", field)


def _webpush(value: Any) -> None:
    field = "message.webpush"
    webpush = _obj(value, field, WEBPUSH_FIELDS)
    for key in ("headers", "data"):
        if webpush.get(key) is not None:
            _str_map(webpush[key], f"{field}.{key}")
    if webpush.get("notification") is not None:
        _obj(webpush["notification"], f"{field}.notification")
    options = webpush.get("fcm_options")
    if options is not None:
        _label(webpush, field)
        link = _str(options, "link", f"{field}.fcm_options")
        if link is not None and not link.startswith("https://"):
            raise MessageError(f"{field}.fcm_options.link", "must be an https URL")


def validate_message(msg: Any) -> None:
    """Raise MessageError naming the first bad field of a v1 Message wire dict."""
    msg = _obj(msg, "message", MESSAGE_FIELDS)
    kind = _target(msg)
    size = _data(msg["data"], "message.data") if msg.get("data") is not None else 0
    if msg.get("notification") is not None:
        note = _obj(msg["notification"], "message.notification", NOTIFICATION_FIELDS)
        for key in ("title", "body", "image"):
            _str(note, key, "message.notification")
    if msg.get("android") is not None:
        size = max(size, _android(msg["android"]))
    if msg.get("apns") is not None:
        _apns(msg["apns"])
    if msg.get("webpush") is not None:
        _webpush(msg["webpush"])
    _label(msg, "message")
    limit = MAX_TOPIC_PAYLOAD_BYTES if kind in ("topic", "condition") else MAX_PAYLOAD_BYTES
    if size > limit:
        raise MessageError("message", f"payload is {size} bytes; the limit is {limit}")
