"""CCS JSON envelopes: classify what the server sends, build the acks we owe. Pure.

Inbound kinds are told apart by `message_type`: absent = upstream, `ack`, `nack`, `receipt`,
`control`. Control messages carry no message_id (clients that required one lost the drain
signal), so nothing here requires it of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CCS_DOMAIN = "gcm.googleapis.com"
DRAINING = "CONNECTION_DRAINING"


@dataclass(frozen=True, slots=True)
class Ack:
    message_id: str
    sender: str | None  # the `from` of the ack: the target we sent to
    canonical_id: str | None = None


@dataclass(frozen=True, slots=True)
class Nack:
    message_id: str
    sender: str | None
    error: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery receipt; ack it with the full `dr2:` message_id."""

    message_id: str
    sender: str
    original_message_id: str | None
    status: str | None
    device_token: str | None
    category: str | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Upstream:
    """A message from a device; ack it on the connection it came on."""

    message_id: str
    sender: str
    category: str | None
    data: dict[str, Any]
    time_to_live: int | None
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Control:
    control_type: str
    raw: dict[str, Any] = field(repr=False)

    @property
    def draining(self) -> bool:
        return self.control_type == DRAINING


@dataclass(frozen=True, slots=True)
class Malformed:
    """Something we cannot act on; logged, never acked (CCS would re-send real messages)."""

    reason: str
    text: str


Inbound = Ack | Nack | Receipt | Upstream | Control | Malformed


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def classify(text: str) -> Inbound:
    """Turn the JSON text of one inbound gcm element into one typed value."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        return Malformed(f"invalid JSON: {exc}", text)
    except RecursionError:  # json raises it for deeply nested arrays or objects
        return Malformed("invalid JSON: nested too deeply", text)
    if not isinstance(obj, dict):
        return Malformed("JSON is not an object", text)
    kind = obj.get("message_type")
    mid = _str(obj.get("message_id"))
    if kind == "ack":
        if mid is None:
            return Malformed("ack without message_id", text)
        return Ack(mid, _str(obj.get("from")), _str(obj.get("registration_id")))
    if kind == "nack":
        if mid is None:
            return Malformed("nack without message_id", text)
        error = _str(obj.get("error")) or "UNKNOWN"
        return Nack(mid, _str(obj.get("from")), error, _str(obj.get("error_description")))
    if kind == "control":
        return Control(_str(obj.get("control_type")) or "", obj)
    sender = _str(obj.get("from"))
    if mid is None or sender is None:
        return Malformed(f"{kind or 'upstream'} without message_id or from", text)
    if kind == "receipt":
        data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
        return Receipt(
            message_id=mid,
            sender=sender,
            original_message_id=_str(data.get("original_message_id")),
            status=_str(data.get("message_status")),
            device_token=_str(data.get("device_registration_id")),
            category=_str(obj.get("category")),
            raw=obj,
        )
    if kind is None:
        data = obj.get("data")
        ttl = obj.get("time_to_live")
        return Upstream(
            message_id=mid,
            sender=sender,
            category=_str(obj.get("category")),
            data=data if isinstance(data, dict) else {},
            time_to_live=ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None,
            raw=obj,
        )
    return Malformed(f"unknown message_type {kind!r}", text)


def ack_json(inbound: Receipt | Upstream) -> str:
    """The ack we owe for an upstream message or receipt: to its sender, same message_id."""
    return json.dumps(
        {"to": inbound.sender, "message_id": inbound.message_id, "message_type": "ack"},
        separators=(",", ":"),
    )


def downstream_json(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
