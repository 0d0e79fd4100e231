"""The FCM HTTP v1 Message resource as dataclasses; `to_json()` gives the wire dict.

Field names are the v1 JSON names (snake_case, which the API accepts). Any sub-object may also be
given as a plain dict in wire form; it is passed through and validated the same way.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

JsonDict = dict[str, Any]


def _encode(value: Any) -> Any:
    if is_dataclass(value) and hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


class _Wire:
    """Dataclass mixin: the wire dict of set (non-None) fields."""

    __slots__ = ()

    def to_json(self) -> JsonDict:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = _encode(value)
        return out


def duration(value: float | int | datetime.timedelta | str) -> str:
    """A protobuf Duration string: 3600 -> "3600s", 1.5 -> "1.5s"; strings pass through."""
    if isinstance(value, str):
        return value
    seconds = value.total_seconds() if isinstance(value, datetime.timedelta) else float(value)
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


@dataclass(slots=True)
class Notification(_Wire):
    title: str | None = None
    body: str | None = None
    image: str | None = None


@dataclass(slots=True)
class AndroidNotification(_Wire):
    title: str | None = None
    body: str | None = None
    icon: str | None = None
    color: str | None = None  # "#rrggbb"
    sound: str | None = None
    tag: str | None = None
    click_action: str | None = None
    body_loc_key: str | None = None
    body_loc_args: list[str] | None = None
    title_loc_key: str | None = None
    title_loc_args: list[str] | None = None
    channel_id: str | None = None
    image: str | None = None
    ticker: str | None = None
    sticky: bool | None = None
    local_only: bool | None = None
    notification_priority: str | None = None  # PRIORITY_MIN .. PRIORITY_MAX
    default_sound: bool | None = None
    default_vibrate_timings: bool | None = None
    default_light_settings: bool | None = None
    visibility: str | None = None  # PRIVATE, PUBLIC, SECRET
    notification_count: int | None = None


@dataclass(slots=True)
class AndroidFcmOptions(_Wire):
    analytics_label: str | None = None


@dataclass(slots=True)
class AndroidConfig(_Wire):
    collapse_key: str | None = None
    priority: str | None = None  # "NORMAL" or "HIGH"
    ttl: float | int | datetime.timedelta | str | None = None  # seconds, or "3600s"
    restricted_package_name: str | None = None
    data: dict[str, str] | None = None
    notification: AndroidNotification | JsonDict | None = None
    fcm_options: AndroidFcmOptions | JsonDict | None = None
    direct_boot_ok: bool | None = None

    def to_json(self) -> JsonDict:
        out = _Wire.to_json(self)
        if self.ttl is not None:
            out["ttl"] = duration(self.ttl)
        return out


@dataclass(slots=True)
class ApnsFcmOptions(_Wire):
    analytics_label: str | None = None
    image: str | None = None


@dataclass(slots=True)
class ApnsConfig(_Wire):
    headers: dict[str, str] | None = None  # apns-priority, apns-expiration, apns-collapse-id...
    payload: JsonDict | None = None  # {"aps": {...}, custom keys...}
    fcm_options: ApnsFcmOptions | JsonDict | None = None


@dataclass(slots=True)
class WebpushFcmOptions(_Wire):
    link: str | None = None  # must be https
    analytics_label: str | None = None


@dataclass(slots=True)
class WebpushConfig(_Wire):
    headers: dict[str, str] | None = None  # TTL, Urgency...
    data: dict[str, str] | None = None
    notification: JsonDict | None = None  # a Web Notification options object
    fcm_options: WebpushFcmOptions | JsonDict | None = None


@dataclass(slots=True)
class FcmOptions(_Wire):
    analytics_label: str | None = None


@dataclass(slots=True)
class Message(_Wire):
    """One message to exactly one of token, topic or condition."""

    token: str | None = None
    topic: str | None = None
    condition: str | None = None
    data: dict[str, str] | None = None
    notification: Notification | JsonDict | None = None
    android: AndroidConfig | JsonDict | None = None
    apns: ApnsConfig | JsonDict | None = None
    webpush: WebpushConfig | JsonDict | None = None
    fcm_options: FcmOptions | JsonDict | None = None

    @property
    def target(self) -> str | None:
        """The token, topic or condition this message goes to."""
        return self.token or self.topic or self.condition

    @classmethod
    def from_json(cls, wire: JsonDict) -> Message:
        """Wrap a v1 wire dict (the value of "message"); validation happens on send."""
        if not isinstance(wire, dict):
            raise TypeError("message must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(wire) - known)
        if unknown:
            raise ValueError(f"message.{unknown[0]}: unknown field")
        return cls(**wire)
