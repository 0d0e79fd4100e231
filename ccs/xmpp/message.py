"""Downstream CCS message model and validation (pure; messages are plain dicts).

A message is the JSON object carried inside CCS's ``<gcm>`` element. ``validate_downstream``
checks it against GCM's server reference (table 1) and FCM's send guide (docs/providers/ccs.rst),
and raises InvalidMessage naming the offending field. It is on the hot path: a typical message
(token, id, three data pairs, title and body) validates in about 3.2 us on the reference machine
(Python 3.11; scripts/bench_message.py measures it).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
from collections.abc import Mapping
from typing import Any

from ccs.condition import ConditionError, parse_condition
from ccs.limits import MAX_TTL

MAX_PAYLOAD = 4096  # bytes of data + notification keys and values
MAX_TOPIC_PAYLOAD = 2048  # the same, for messages to a topic or a condition
MAX_MESSAGE_ID_LEN = 1024  # the reference sets no limit; this one only stops runaway input
MAX_TO_LEN = 4096  # tokens are ~160 chars, notification keys a few hundred
MAX_COLLAPSE_KEY_LEN = 1024
TOPIC_PREFIX = "/topics/"
PRIORITIES = frozenset({"normal", "high"})

# Printable ASCII without spaces: what registration tokens and notification keys are made of.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
_TOPIC_RE = re.compile(r"/topics/[a-zA-Z0-9\-_.~%]+")
_COLOR_RE = re.compile(r"#[0-9a-fA-F]{6}")
_BOOL_FIELDS = frozenset(
    {"content_available", "mutable_content", "delivery_receipt_requested", "dry_run",
     "delay_while_idle"}
)
_STR_NOTIFICATION = frozenset(
    {"title", "body", "icon", "sound", "tag", "click_action", "body_loc_key", "title_loc_key",
     "android_channel_id"}
)
NOTIFICATION_KEYS = _STR_NOTIFICATION | {"badge", "color", "body_loc_args", "title_loc_args"}
TOP_LEVEL_KEYS = _BOOL_FIELDS | {
    "to", "condition", "message_id", "collapse_key", "priority", "time_to_live", "data",
    "notification",
}


class InvalidMessage(ValueError):
    """A message broke a rule; `field` is its path (``data.from``, ``notification.color``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def is_topic(to: Any) -> bool:
    """True when `to` addresses a topic (``/topics/<name>``)."""
    return isinstance(to, str) and to.startswith(TOPIC_PREFIX)


_PREFIX = ""
_COUNTER = itertools.count(1)


def _reseed() -> None:
    global _PREFIX, _COUNTER
    _PREFIX = secrets.token_hex(6)  # 48 random bits per process: ids never collide across them
    _COUNTER = itertools.count(1)


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_message_id() -> str:
    """A short id unique per sender: a random per-process prefix and a counter (~14 chars)."""
    return f"{_PREFIX}{next(_COUNTER):x}"


def _field_name(key: Any) -> str:
    return key if isinstance(key, str) and key else repr(key)


def _str_size(value: Any) -> int:
    """UTF-8 bytes of a payload value as it goes on the wire (non-strings as compact JSON)."""
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def payload_size(message: Mapping[str, Any]) -> int:
    """Bytes of the keys and values of `data` and `notification`, UTF-8 encoded.

    Table 11 ("Message Too Big") counts payload keys and values, not JSON punctuation; FCM applies
    the same 4096/2048 limit to notification and data together, so both are counted.
    """
    total = 0
    for part in ("data", "notification"):
        obj = message.get(part)
        if obj and isinstance(obj, Mapping):
            for k, v in obj.items():
                if type(v) is str and type(k) is str and k.isascii() and v.isascii():
                    total += len(k) + len(v)  # the common case, without encoding
                else:
                    total += _str_size(k) + _str_size(v)
    return total


# JSON goes out with ensure_ascii=False inside XML: a lone surrogate becomes a character
# reference XML forbids, and U+FFFE/U+FFFF are not XML characters. Either makes CCS close the
# stream, and a re-send would close the next one: refused here instead.
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")


def _check_text(path: str, value: str) -> None:
    if not value.isascii() and _NOT_XML.search(value):
        raise InvalidMessage(path, "holds a character XML cannot carry "
                                   "(a lone surrogate, U+FFFE or U+FFFF)")


def _check_data(data: Any) -> dict[str, str]:
    if not isinstance(data, Mapping):
        raise InvalidMessage("data", "must be a JSON object")
    for k, v in data.items():
        if not isinstance(k, str):
            raise InvalidMessage(f"data.{_field_name(k)}", "keys must be strings")
        if k == "from" or k == "gcm" or k.startswith("google"):
            raise InvalidMessage(f"data.{k}", "reserved key (from, gcm, google*)")
        if not k:
            raise InvalidMessage("data", "empty key")
        if not isinstance(v, str):
            raise InvalidMessage(f"data.{k}", "value must be a string (convert it first)")
        if not (k.isascii() and v.isascii()):
            _check_text(f"data.{_field_name(k)}", k)
            _check_text(f"data.{_field_name(k)}", v)
    return data if type(data) is dict else dict(data)


def _check_loc_args(path: str, value: Any) -> None:
    if isinstance(value, str):  # the legacy form: a JSON array written as a string
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise InvalidMessage(path, "is a string but not a JSON array") from None
    if not isinstance(value, list):
        raise InvalidMessage(path, "must be an array of strings or a JSON array string")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidMessage(f"{path}[{i}]", "must be a string")
        _check_text(f"{path}[{i}]", item)


def _check_notification(note: Any) -> dict[str, Any]:
    if not isinstance(note, Mapping):
        raise InvalidMessage("notification", "must be a JSON object")
    for k, v in note.items():
        if k in _STR_NOTIFICATION:
            if not isinstance(v, str):
                raise InvalidMessage(f"notification.{k}", "must be a string")
            _check_text(f"notification.{k}", v)
        elif k == "color":
            if not isinstance(v, str) or not _COLOR_RE.fullmatch(v):
                raise InvalidMessage("notification.color", "must be #rrggbb")
        elif k == "badge":
            # The legacy reference types badge as a string; a non-negative integer is taken too.
            number = isinstance(v, int) and not isinstance(v, bool) and v >= 0
            if not (number or isinstance(v, str)):
                raise InvalidMessage("notification.badge", "must be a string or an integer >= 0")
            if isinstance(v, str):
                _check_text("notification.badge", v)
        elif k == "body_loc_args" or k == "title_loc_args":
            _check_loc_args(f"notification.{k}", v)
        else:
            raise InvalidMessage(f"notification.{_field_name(k)}", "unknown field")
    return note if type(note) is dict else dict(note)


def _check_to(to: Any) -> str:
    if not isinstance(to, str):
        raise InvalidMessage("to", "must be a string")
    if len(to) > MAX_TO_LEN:
        raise InvalidMessage("to", f"longer than {MAX_TO_LEN} characters")
    if to.startswith(TOPIC_PREFIX):
        if not _TOPIC_RE.fullmatch(to):
            raise InvalidMessage("to", "topic name must match [a-zA-Z0-9-_.~%]+")
    elif not _TOKEN_RE.fullmatch(to):
        raise InvalidMessage("to", "must be a non-empty token without spaces or control characters")
    return to


def _check_condition(cond: Any) -> str:
    if not isinstance(cond, str):
        raise InvalidMessage("condition", "must be a string")
    try:
        parse_condition(cond)
    except ConditionError as e:
        raise InvalidMessage("condition", str(e)) from None
    return cond


def _check_ttl(ttl: Any) -> int:
    if isinstance(ttl, float) and ttl.is_integer():
        ttl = int(ttl)  # JSON has one number type; 60.0 means 60
    if not isinstance(ttl, int) or isinstance(ttl, bool):
        raise InvalidMessage("time_to_live", "must be an integer number of seconds")
    if not 0 <= ttl <= MAX_TTL:
        raise InvalidMessage("time_to_live", f"must be between 0 and {MAX_TTL}")
    return int(ttl)


def _check_string(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidMessage(name, "must be a non-empty string")
    if len(value) > limit:
        raise InvalidMessage(name, f"longer than {limit} characters")
    _check_text(name, value)
    return value


def validate_downstream(message: Mapping[str, Any]) -> dict[str, Any]:
    """Check a CCS downstream message; return a normalized shallow copy.

    Raises InvalidMessage naming the field.

    Normalized: keys whose value is None are dropped (None means "not set"), an integral float
    time_to_live becomes an int. Nothing else is rewritten.
    """
    if not isinstance(message, Mapping):
        raise InvalidMessage("message", "must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in message.items():
        if value is None and key in TOP_LEVEL_KEYS:
            continue
        if key == "to":
            out[key] = _check_to(value)
        elif key == "message_id":
            out[key] = _check_string(key, value, MAX_MESSAGE_ID_LEN)
        elif key == "data":
            out[key] = _check_data(value)
        elif key == "notification":
            out[key] = _check_notification(value)
        elif key in _BOOL_FIELDS:
            if value is not True and value is not False:
                raise InvalidMessage(key, "must be true or false")
            out[key] = value
        elif key == "time_to_live":
            out[key] = _check_ttl(value)
        elif key == "priority":
            if not isinstance(value, str) or value not in PRIORITIES:
                raise InvalidMessage(key, 'must be "normal" or "high"')
            out[key] = value
        elif key == "collapse_key":
            out[key] = _check_string(key, value, MAX_COLLAPSE_KEY_LEN)
        elif key == "condition":
            out[key] = _check_condition(value)
        else:
            raise InvalidMessage(_field_name(key), "unknown field")

    has_to = "to" in out
    if has_to == ("condition" in out):
        if has_to:
            raise InvalidMessage("to", "give either to or condition, not both")
        raise InvalidMessage("to", "missing target: give to or condition")
    if "message_id" not in out:
        raise InvalidMessage("message_id", "required")
    if "data" in out or "notification" in out:
        topical = not has_to or out["to"].startswith(TOPIC_PREFIX)
        limit = MAX_TOPIC_PAYLOAD if topical else MAX_PAYLOAD
        size = payload_size(out)
        if size > limit:
            field = "data" if "data" in out else "notification"
            raise InvalidMessage(field, f"payload is {size} bytes; the limit is {limit}")
    return out


def build_message(
    to: str | None = None,
    *,
    condition: str | None = None,
    data: Mapping[str, str] | None = None,
    notification: Mapping[str, Any] | None = None,
    message_id: str | None = None,
    collapse_key: str | None = None,
    priority: str | None = None,
    time_to_live: int | None = None,
    delivery_receipt_requested: bool | None = None,
    dry_run: bool | None = None,
    content_available: bool | None = None,
    mutable_content: bool | None = None,
    delay_while_idle: bool | None = None,
) -> dict[str, Any]:
    """Build and validate; a missing message_id gets new_message_id(); None options are left out."""
    message: dict[str, Any] = {
        "to": to,
        "condition": condition,
        "message_id": new_message_id() if message_id is None else message_id,
        "data": data,
        "notification": notification,
        "collapse_key": collapse_key,
        "priority": priority,
        "time_to_live": time_to_live,
        "delivery_receipt_requested": delivery_receipt_requested,
        "dry_run": dry_run,
        "content_available": content_available,
        "mutable_content": mutable_content,
        "delay_while_idle": delay_while_idle,
    }
    return validate_downstream(message)
