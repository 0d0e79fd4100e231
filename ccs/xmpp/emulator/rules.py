"""What CCS decides about a downstream message (pure): field validation and scripted outcomes.

Texts follow the GCM server reference (table 11) and the `InvalidJson : CODE : detail` form CCS
used in `error_description`. Unknown top-level fields are ignored, as CCS did, unless
`strict_fields` is set, in which case they are nacked INVALID_JSON naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ccs.limits import MAX_TTL

MAX_DATA = 4096
MAX_TOPIC_DATA = 2048
MAX_CONDITION_TOPICS = 5

KNOWN_FIELDS = frozenset({
    "to", "condition", "message_id", "collapse_key", "priority", "content_available",
    "mutable_content", "time_to_live", "delivery_receipt_requested", "dry_run",
    "delay_while_idle", "data", "notification", "restricted_package_name", "message_type",
})
BOOL_FIELDS = ("content_available", "mutable_content", "delivery_receipt_requested", "dry_run",
               "delay_while_idle")
STRING_FIELDS = ("collapse_key", "restricted_package_name", "condition")
NOTIFICATION_STRINGS = ("title", "body", "icon", "sound", "badge", "tag", "color", "click_action",
                        "body_loc_key", "title_loc_key", "android_channel_id")
NOTIFICATION_LISTS = ("body_loc_args", "title_loc_args")

TOPIC_RE = re.compile(r"^/topics/[a-zA-Z0-9\-_.~%]+$")
_COND_TOKEN = re.compile(r"\s*(?:(&&)|(\|\|)|(\()|(\))|'([a-zA-Z0-9\-_.~%]+)'\s+in\s+topics)")

MISSING_ID_TEXT = "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id"


class Rejection(Exception):
    """A downstream message CCS would nack: `code` is the nack error, `description` its text."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


def _invalid(kind: str, detail: str) -> Rejection:
    return Rejection("INVALID_JSON", f"InvalidJson : {kind} : {detail}")


def _check_condition(cond: str) -> None:
    """Parse `'a' in topics && ('b' in topics || ...)`; at most five topics."""
    tokens: list[str] = []
    pos, end = 0, len(cond.rstrip())
    while pos < end:
        m = _COND_TOKEN.match(cond, pos)
        if not m:
            raise _invalid("INVALID_CONDITION", f"cannot parse condition at {cond[pos:pos + 20]!r}")
        tokens.append("T" if m.group(5) else m.group(0).strip())
        pos = m.end()
    if tokens.count("T") > MAX_CONDITION_TOPICS:
        raise _invalid("INVALID_CONDITION", f"more than {MAX_CONDITION_TOPICS} topics")
    # expr := term (op term)* ; term := T | ( expr )
    i = 0

    def term() -> None:
        nonlocal i
        if i < len(tokens) and tokens[i] == "T":
            i += 1
        elif i < len(tokens) and tokens[i] == "(":
            i += 1
            expr()
            if i >= len(tokens) or tokens[i] != ")":
                raise _invalid("INVALID_CONDITION", "unbalanced parentheses")
            i += 1
        else:
            raise _invalid("INVALID_CONDITION", "expected a topic test")

    def expr() -> None:
        nonlocal i
        term()
        while i < len(tokens) and tokens[i] in ("&&", "||"):
            i += 1
            term()

    expr()
    if i != len(tokens):
        raise _invalid("INVALID_CONDITION", "unexpected trailing tokens")


def _check_data(data: object, limit: int) -> None:
    if not isinstance(data, dict):
        raise _invalid("JSON_TYPE_ERROR", "Field \"data\" must be a JSON object")
    size = 0
    for key, value in data.items():
        if key in ("from", "gcm") or key.startswith("google"):
            raise _invalid("INVALID_DATA_KEY", f"data key {key!r} is reserved")
        size += len(key.encode()) + len(
            (value if isinstance(value, str) else json.dumps(value)).encode())
    if size > limit:
        raise _invalid("MESSAGE_TOO_BIG", f"data is {size} bytes, limit {limit}")


def _check_notification(note: object) -> None:
    if not isinstance(note, dict):
        raise _invalid("JSON_TYPE_ERROR", "Field \"notification\" must be a JSON object")
    for name in NOTIFICATION_STRINGS:
        if name in note and not isinstance(note[name], str):
            raise _invalid("JSON_TYPE_ERROR", f"Field \"notification.{name}\" must be a string")
    for name in NOTIFICATION_LISTS:
        if name in note and not (isinstance(note[name], list)
                                 and all(isinstance(x, str) for x in note[name])):
            raise _invalid("JSON_TYPE_ERROR",
                           f"Field \"notification.{name}\" must be an array of strings")


def check_downstream(msg: dict, strict_fields: bool = False) -> None:
    """Raise Rejection if CCS would nack `msg` for its content (message_id already checked)."""
    to = msg.get("to")
    cond = msg.get("condition")
    if to is None and cond is None:
        raise _invalid("MISSING_REGISTRATION", "Missing Required Field: to")
    if to is not None and not isinstance(to, str):
        raise _invalid("JSON_TYPE_ERROR", "Field \"to\" must be a string")
    if isinstance(to, str) and (not to or to.startswith("/topics/") and not TOPIC_RE.match(to)):
        raise _invalid("INVALID_TO", f"bad recipient {to!r}")
    for name in STRING_FIELDS:
        if name in msg and not isinstance(msg[name], str):
            raise _invalid("JSON_TYPE_ERROR", f"Field \"{name}\" must be a string")
    for name in BOOL_FIELDS:
        if name in msg and not isinstance(msg[name], bool):
            raise _invalid("JSON_TYPE_ERROR", f"Field \"{name}\" must be a JSON boolean")
    if isinstance(cond, str):
        _check_condition(cond)
    if "time_to_live" in msg:
        ttl = msg["time_to_live"]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL:
            raise _invalid("INVALID_TTL", f"time_to_live must be an integer 0..{MAX_TTL}")
    if "priority" in msg and msg["priority"] not in ("normal", "high"):
        raise _invalid("INVALID_PRIORITY", "priority must be \"normal\" or \"high\"")
    if "data" in msg:
        topic = cond is not None or (isinstance(to, str) and to.startswith("/topics/"))
        _check_data(msg["data"], MAX_TOPIC_DATA if topic else MAX_DATA)
    if "notification" in msg:
        _check_notification(msg["notification"])
    if strict_fields:
        for name in msg:
            if name not in KNOWN_FIELDS:
                raise _invalid("UNKNOWN_FIELD", f"Unknown field \"{name}\"")


@dataclass
class _TokenError:
    code: str
    remaining: int | None  # None = for ever


@dataclass
class Script:
    """Scripted per-token outcomes: errors (optionally for the first N sends) and canonical ids."""

    errors: dict[str, _TokenError] = field(default_factory=dict)
    canonical: dict[str, str] = field(default_factory=dict)

    def set_token_error(self, token: str, code: str | None, times: int | None = None) -> None:
        if code is None:
            self.errors.pop(token, None)
        else:
            if times is not None and times < 1:
                raise ValueError("times must be a positive integer or None")
            self.errors[token] = _TokenError(code, times)

    def set_canonical(self, token: str, new_token: str | None) -> None:
        if new_token is None:
            self.canonical.pop(token, None)
        else:
            self.canonical[token] = new_token

    def error_for(self, token: str) -> str | None:
        """The scripted nack code for one send to `token` (consumes one of its `times`)."""
        entry = self.errors.get(token)
        if entry is None:
            return None
        if entry.remaining is not None:
            entry.remaining -= 1
            if entry.remaining <= 0:
                del self.errors[token]
        return entry.code


ERROR_TEXT = {
    "DEVICE_UNREGISTERED": "Device unregistered",
    "BAD_REGISTRATION": "Invalid token on 'to' field",
    "DEVICE_MESSAGE_RATE_EXCEEDED": "Downstream message rate exceeded for this device",
    "TOPICS_MESSAGE_RATE_EXCEEDED": "Message rate exceeded for this topic",
    "SERVICE_UNAVAILABLE": "Service temporarily unavailable",
    "INTERNAL_SERVER_ERROR": "Internal server error",
    "CONNECTION_DRAINING": "Connection is draining",
    "QUOTA_EXCEEDED": "Quota exceeded",
    "INVALID_JSON": "InvalidJson",
    "BAD_ACK": "Bad ack message",
}


def error_description(code: str) -> str:
    return ERROR_TEXT.get(code, code)
