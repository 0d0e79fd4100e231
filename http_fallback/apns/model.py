"""The APNs notification: alert, badge, sound and friends, plus the request headers (pure)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class NotificationError(ValueError):
    """A notification that APNs would refuse; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class PushType(StrEnum):
    ALERT = "alert"
    BACKGROUND = "background"
    LOCATION = "location"
    VOIP = "voip"
    COMPLICATION = "complication"
    FILEPROVIDER = "fileprovider"
    MDM = "mdm"
    LIVEACTIVITY = "liveactivity"
    PUSHTOTALK = "pushtotalk"
    WIDGETS = "widgets"


# The topic is the bundle id plus this suffix for these push types.
TOPIC_SUFFIX: dict[PushType, str] = {
    PushType.VOIP: ".voip",
    PushType.COMPLICATION: ".complication",
    PushType.FILEPROVIDER: ".pushkit.fileprovider",
    PushType.LOCATION: ".location-query",
    PushType.LIVEACTIVITY: ".push-type.liveactivity",
    PushType.PUSHTOTALK: ".voip-ptt",
}


@dataclass
class Alert:
    """The dictionary form of `aps.alert`; fields left None are omitted."""

    body: str | None = None
    title: str | None = None
    subtitle: str | None = None
    loc_key: str | None = None
    loc_args: list[str] | None = None
    title_loc_key: str | None = None
    title_loc_args: list[str] | None = None
    action_loc_key: str | None = None
    launch_image: str | None = None

    def as_dict(self) -> dict[str, Any]:
        names = {
            "body": self.body, "title": self.title, "subtitle": self.subtitle,
            "loc-key": self.loc_key, "loc-args": self.loc_args,
            "title-loc-key": self.title_loc_key, "title-loc-args": self.title_loc_args,
            "action-loc-key": self.action_loc_key, "launch-image": self.launch_image,
        }
        return {k: v for k, v in names.items() if v is not None}


@dataclass
class Notification:
    """One notification to one device token (hex). `payload` holds custom top-level keys."""

    device: str | None = None
    alert: str | Alert | dict[str, Any] | None = None
    badge: int | None = None
    sound: str | dict[str, Any] | None = None
    content_available: bool = False
    mutable_content: bool = False
    category: str | None = None
    thread_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    aps_extra: dict[str, Any] = field(default_factory=dict)  # e.g. interruption-level
    expiry: int | None = None  # epoch seconds; 0 = deliver now or never
    priority: int | None = None  # 10, 5 or 1; default 10 (5 for background)
    collapse_id: str | None = None
    push_type: PushType | str | None = None  # default: alert, or background when silent
    topic: str | None = None  # bundle id; the client's default topic otherwise
    apns_id: str | None = None  # lowercase UUID; APNs makes one when absent
    raw: dict[str, Any] | None = None  # a complete payload, sent as is

    # node-apn style helpers for the alert dictionary
    def _alert(self) -> Alert:
        if isinstance(self.alert, Alert):
            return self.alert
        if isinstance(self.alert, dict):
            raise NotificationError("alert", "is a plain dict; set its keys directly")
        self.alert = Alert(body=self.alert)
        return self.alert

    def set_alert_text(self, text: str) -> Notification:
        self._alert().body = text
        return self

    def set_loc_key(self, key: str) -> Notification:
        self._alert().loc_key = key
        return self

    def set_loc_args(self, args: list[str]) -> Notification:
        self._alert().loc_args = list(args)
        return self

    def set_action_loc_key(self, key: str) -> Notification:
        self._alert().action_loc_key = key
        return self

    def set_launch_image(self, image: str) -> Notification:
        self._alert().launch_image = image
        return self

    def clone(self, device: str | None = None) -> Notification:
        """A deep copy addressed to `device` (a new apns-id is made for it)."""
        twin = copy.deepcopy(self)
        twin.device = device
        twin.apns_id = None
        return twin

    def effective_push_type(self) -> PushType:
        if self.push_type:
            try:
                return PushType(self.push_type)
            except ValueError:
                raise NotificationError("push_type", f"unknown {self.push_type!r}") from None
        silent = self.alert is None and self.badge is None and self.sound is None
        return PushType.BACKGROUND if silent and self.content_available else PushType.ALERT

    def aps(self) -> dict[str, Any]:
        aps: dict[str, Any] = {}
        if self.alert is not None:
            aps["alert"] = self.alert.as_dict() if isinstance(self.alert, Alert) else self.alert
        if self.badge is not None:
            aps["badge"] = self.badge
        if self.sound is not None:
            aps["sound"] = self.sound
        if self.content_available:
            aps["content-available"] = 1
        if self.mutable_content:
            aps["mutable-content"] = 1
        if self.category is not None:
            aps["category"] = self.category
        if self.thread_id is not None:
            aps["thread-id"] = self.thread_id
        aps.update(self.aps_extra)
        return aps

    def to_payload(self) -> dict[str, Any]:
        """The JSON object sent as the request body."""
        if self.raw is not None:
            return self.raw
        if "aps" in self.payload:
            raise NotificationError("payload", "custom keys may not include 'aps'")
        body = dict(self.payload)
        body["aps"] = self.aps()
        return body
