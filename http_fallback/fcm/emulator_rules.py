"""How the FCM emulator judges a messages:send request, written from the v1 reference.

Kept apart from the client's own checks on purpose: the emulator follows the API's published
rules (field types, Duration and color formats, one target, reserved keys, size limits) and
answers like FCM, with google.rpc.BadRequest field violations naming the field.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ccs.limits import MAX_TTL

STR, BOOL, INT, NUM, STRMAP, STRLIST, DURATION, COLOR, OBJ, LABEL = (
    "string", "bool", "int", "number", "map<string,string>", "repeated string",
    "google.protobuf.Duration", "color", "object", "analytics label")
DURATION_RE = re.compile(r"^-?\d+(\.\d{1,9})?s$")
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
LABEL_RE = re.compile(r"^[a-zA-Z0-9\-_.~%]{1,50}$")
TOPIC_RE = re.compile(r"^(/topics/)?[a-zA-Z0-9\-_.~%]+$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-:.]{1,4096}$")


def enum(*names: str) -> frozenset[str]:
    return frozenset(names)


LIGHT = {"color": {"red": NUM, "green": NUM, "blue": NUM, "alpha": NUM},
         "light_on_duration": DURATION, "light_off_duration": DURATION}
ANDROID_NOTIFICATION = {
    "title": STR, "body": STR, "icon": STR, "color": COLOR, "sound": STR, "tag": STR,
    "click_action": STR, "body_loc_key": STR, "body_loc_args": STRLIST, "title_loc_key": STR,
    "title_loc_args": STRLIST, "channel_id": STR, "ticker": STR, "sticky": BOOL,
    "event_time": STR, "local_only": BOOL,
    "notification_priority": enum("PRIORITY_UNSPECIFIED", "PRIORITY_MIN", "PRIORITY_LOW",
                                  "PRIORITY_DEFAULT", "PRIORITY_HIGH", "PRIORITY_MAX"),
    "default_sound": BOOL, "default_vibrate_timings": BOOL, "default_light_settings": BOOL,
    "vibrate_timings": [DURATION], "visibility": enum("VISIBILITY_UNSPECIFIED", "PRIVATE",
                                                      "PUBLIC", "SECRET"),
    "notification_count": INT, "light_settings": LIGHT, "image": STR,
    "proxy": enum("PROXY_UNSPECIFIED", "ALLOW", "DENY", "IF_PRIORITY_LOWERED"),
}
ANDROID = {
    "collapse_key": STR, "priority": enum("NORMAL", "HIGH"), "ttl": DURATION,
    "restricted_package_name": STR, "data": STRMAP, "notification": ANDROID_NOTIFICATION,
    "fcm_options": {"analytics_label": LABEL}, "direct_boot_ok": BOOL,
    "bandwidth_constrained_ok": BOOL, "restricted_satellite_ok": BOOL,
}
APNS = {"headers": STRMAP, "payload": OBJ, "live_activity_token": STR,
        "fcm_options": {"analytics_label": LABEL, "image": STR}}
WEBPUSH = {"headers": STRMAP, "data": STRMAP, "notification": OBJ,
           "fcm_options": {"link": STR, "analytics_label": LABEL}}
MESSAGE = {
    "name": STR, "data": STRMAP, "notification": {"title": STR, "body": STR, "image": STR},
    "android": ANDROID, "webpush": WEBPUSH, "apns": APNS,
    "fcm_options": {"analytics_label": LABEL}, "token": STR, "topic": STR, "condition": STR,
    "fid": STR,
}
REQUEST = {"message": MESSAGE, "validate_only": BOOL}


class Violation(Exception):
    def __init__(self, field: str, description: str) -> None:
        super().__init__(description)
        self.field = field
        self.description = description


def _bad_value(path: str, kind: str, value: Any) -> Violation:
    return Violation(path, f"Invalid value at '{path}' ({kind}), {json.dumps(value)}")


def _check(value: Any, spec: Any, path: str) -> None:
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise _bad_value(path, "object", value)
        for key, item in value.items():
            if key not in spec:
                raise Violation(path, f"Invalid JSON payload received. Unknown name \"{key}\" "
                                      f"at '{path}': Cannot find field.")
            if item is not None:
                _check(item, spec[key], f"{path}.{key}" if path else key)
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise _bad_value(path, "list", value)
        for i, item in enumerate(value):
            _check(item, spec[0], f"{path}[{i}]")
    elif isinstance(spec, frozenset):
        if not isinstance(value, str) or value.upper() not in spec:
            raise _bad_value(path, "enum", value)
    elif spec == STRMAP:
        if not isinstance(value, dict):
            raise _bad_value(path, STRMAP, value)
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(item, str):
                raise _bad_value(f"{path}[{i}].value", "TYPE_STRING", item)
            if not key:
                raise _bad_value(f"{path}[{i}].key", "TYPE_STRING", key)
    elif spec == STRLIST:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad_value(path, "TYPE_STRING", value)
    elif spec in (STR, COLOR, LABEL):
        if not isinstance(value, str):
            raise _bad_value(path, "TYPE_STRING", value)
        if spec == COLOR and not COLOR_RE.match(value):
            raise Violation(path, "Invalid color format: expected #rrggbb")
        if spec == LABEL and not LABEL_RE.match(value):
            raise Violation(path, "Analytics label must match ^[a-zA-Z0-9-_.~%]{1,50}$")
    elif spec == BOOL:
        if not isinstance(value, bool):
            raise _bad_value(path, "TYPE_BOOL", value)
    elif spec in (INT, NUM):
        if isinstance(value, bool) or not isinstance(value, int if spec == INT else (int, float)):
            raise _bad_value(path, spec, value)
    elif spec == DURATION:
        if not isinstance(value, str) or not DURATION_RE.match(value):
            raise _bad_value(path, "type.googleapis.com/google.protobuf.Duration", value)
    elif spec == OBJ:
        if not isinstance(value, dict):
            raise _bad_value(path, "google.protobuf.Struct", value)


def _data_size(data: dict[str, str] | None, path: str) -> int:
    size = 0
    for key, value in (data or {}).items():
        low = key.lower()
        if low in ("from", "notification", "message_type") or low.startswith(("google", "gcm")):
            raise Violation(f"{path}", f"Invalid data key: {key!r} is reserved")
        size += len(key.encode()) + len(value.encode())
    return size


def check_request(body: Any) -> dict[str, Any]:
    """The message of a valid request body; raises Violation naming the first bad field."""
    _check(body, REQUEST, "")
    if "message" not in body or not isinstance(body["message"], dict):
        raise Violation("message", "Request is missing required field 'message'")
    msg = body["message"]
    _check(msg, MESSAGE, "message")
    targets = [k for k in ("token", "topic", "condition", "fid") if msg.get(k)]
    if len(targets) != 1:
        raise Violation("message", "Exactly one of token, topic, condition or fid is required")
    target = targets[0]
    if target == "token" and not TOKEN_RE.match(msg["token"]):
        raise Violation("message.token", "The registration token is not a valid FCM "
                                         "registration token")
    if target == "topic" and not TOPIC_RE.match(msg["topic"]):
        raise Violation("message.topic", "Invalid topic name")
    if target == "condition":
        named = re.findall(r"'([a-zA-Z0-9\-_.~%]+)'\s+in\s+topics", msg["condition"])
        rest = re.sub(r"'[a-zA-Z0-9\-_.~%]+'\s+in\s+topics|&&|\|\||[()!\s]", "",
                      msg["condition"])
        if not named or rest:
            raise Violation("message.condition", "Invalid condition expression")
        if len(named) > 5:
            raise Violation("message.condition", "A condition may name at most 5 topics")
    android = msg.get("android") or {}
    if android.get("ttl") is not None and not 0 <= float(android["ttl"][:-1]) <= MAX_TTL:
        raise Violation("message.android.ttl", f"TTL must be between 0s and {MAX_TTL}s")
    note = android.get("notification") or {}
    for key in ("body", "title"):
        if note.get(f"{key}_loc_args") and not note.get(f"{key}_loc_key"):
            raise Violation(f"message.android.notification.{key}_loc_key",
                            f"{key}_loc_key is required when {key}_loc_args is set")
    link = ((msg.get("webpush") or {}).get("fcm_options") or {}).get("link")
    if link is not None and not link.startswith("https://"):
        raise Violation("message.webpush.fcm_options.link", "The link must be an https URL")
    aps = ((msg.get("apns") or {}).get("payload") or {}).get("aps")
    if aps is not None and not isinstance(aps, dict):
        raise Violation("message.apns.payload.aps", "aps must be a JSON object")
    # the published limit counts data keys and values; android.data replaces data on Android
    size = max(_data_size(msg.get("data"), "message.data"),
               _data_size(android.get("data"), "message.android.data"))
    limit = 2048 if target in ("topic", "condition") else 4096
    if size > limit:
        raise Violation("message", f"Message is too big: {size} bytes, limit {limit}")
    return msg
