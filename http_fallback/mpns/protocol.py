"""MPNS wire format (pure): XML built with lxml, request headers, and the answer judged.

The results object mirrors the mpns module's: deviceConnectionStatus, notificationStatus,
subscriptionStatus, plus minutesToDelay and shouldDeleteChannel when they apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from ccs.outcome import Status, TokenEventKind
from http_fallback.mpns.model import CLEAR, TARGETS, CycleTile, MpnsMessage, Notification, Raw

NS = "WPNotification"
XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>'
CONTENT_TYPE = "text/xml; charset=utf-8"


def _el(parent: etree._Element, name: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{NS}}}{name}")


def build_xml(notification: Notification) -> bytes:
    """The payload: lxml escapes every value; CLEAR becomes Action="Clear"."""
    if isinstance(notification, Raw):
        return notification.payload
    root = etree.Element(f"{{{NS}}}Notification", nsmap={"wp": NS})
    template = getattr(notification, "template", None)
    if notification.kind == "toast":
        body = _el(root, "Toast")
    else:
        body = _el(root, "Tile")
        if getattr(notification, "id", None):
            body.set("Id", notification.id)
        if template:
            root.set("Version", "2.0")
            body.set("Template", template)
    for attr, name in notification.elements:
        value = getattr(notification, attr)
        if value is None:
            continue
        child = _el(body, name)
        if value is CLEAR:
            child.set("Action", "Clear")
        else:
            child.text = str(value)
    if isinstance(notification, CycleTile):
        for i, image in enumerate(notification.cycle_images, start=1):
            _el(body, f"CycleImage{i}").text = image
    return XML_DECLARATION + etree.tostring(root, encoding="utf-8")


def request_headers(msg: MpnsMessage) -> dict[str, str]:
    headers = {"Content-Type": CONTENT_TYPE, "X-NotificationClass": str(msg.notification_class)}
    target = TARGETS[msg.notification.kind]
    if target:
        headers["X-WindowsPhone-Target"] = target
    if msg.message_id:
        headers["X-MessageID"] = msg.message_id
    if msg.callback_uri:
        headers["X-CallbackURI"] = msg.callback_uri
    return headers


@dataclass(frozen=True)
class MpnsPolicy:
    """Choices the references disagree on; the defaults delete a channel only on 404/Expired."""

    delete_channel_on_400: bool = False
    delete_channel_on_401: bool = False
    inactive_minutes: int = 61  # 412: at least an hour
    throttled_minutes: int = 60  # 406: the unauthenticated daily limit
    unavailable_minutes: int = 5  # 503 and connection errors


ERRORS = {400: "BadRequest", 401: "Unauthorized", 404: "Expired", 405: "MethodNotAllowed",
          406: "Throttled", 412: "DeviceInactive", 503: "ServiceUnavailable"}


@dataclass(frozen=True)
class MpnsResult:
    """One answer, judged. `retry_now` means a short backoff and resend is right."""

    status: Status
    status_code: int
    notification_status: str | None = None
    subscription_status: str | None = None
    device_connection_status: str | None = None
    error: str | None = None
    retryable: bool = False
    retry_now: bool = False
    minutes_to_delay: int | None = None
    should_delete_channel: bool = False
    event: TokenEventKind | None = None
    description: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_results(self) -> dict[str, Any]:
        """The mpns module's results object (camelCase keys)."""
        out: dict[str, Any] = {
            "statusCode": self.status_code,
            "deviceConnectionStatus": self.device_connection_status,
            "notificationStatus": self.notification_status,
            "subscriptionStatus": self.subscription_status,
        }
        if self.minutes_to_delay is not None:
            out["minutesToDelay"] = self.minutes_to_delay
        if self.should_delete_channel:
            out["shouldDeleteChannel"] = True
        return out


def judge(status: int, headers: Any, policy: MpnsPolicy = MpnsPolicy()) -> MpnsResult:
    """Judge an answer from its status code and X-*Status headers (case-insensitive mapping)."""
    note = headers.get("X-NotificationStatus") if headers else None
    sub = headers.get("X-SubscriptionStatus") if headers else None
    conn = headers.get("X-DeviceConnectionStatus") if headers else None
    base = {"status_code": status, "notification_status": note, "subscription_status": sub,
            "device_connection_status": conn}
    expired = sub is not None and sub.lower() == "expired"
    if status == 200 and not expired:
        if note == "QueueFull":
            return MpnsResult(Status.FAILED, error="QueueFull", retryable=True, retry_now=True,
                              description="the device queue is full; retry later", **base)
        if note == "Dropped":
            return MpnsResult(Status.FAILED, error="Dropped", **base)
        return MpnsResult(Status.OK, **base)  # Received, or Suppressed by the phone
    delete = (expired or status == 404 or (status == 400 and policy.delete_channel_on_400)
              or (status == 401 and policy.delete_channel_on_401))
    error = "Expired" if expired else ERRORS.get(status, f"HTTP {status}")
    if delete:
        return MpnsResult(Status.FAILED, error=error, should_delete_channel=True,
                          event=TokenEventKind.UNREGISTERED,
                          description="the channel is gone: delete it", **base)
    if status == 412:
        return MpnsResult(Status.FAILED, error=error, retryable=True,
                          minutes_to_delay=policy.inactive_minutes,
                          description="device inactive: wait before sending again", **base)
    if status == 406:
        return MpnsResult(Status.FAILED, error=error, retryable=True,
                          minutes_to_delay=policy.throttled_minutes,
                          event=TokenEventKind.RATE_LIMITED,
                          description="daily limit for this channel reached", **base)
    if status == 503 or 500 <= status <= 599:
        return MpnsResult(Status.FAILED, error=ERRORS.get(503), retryable=True, retry_now=True,
                          minutes_to_delay=policy.unavailable_minutes, **base)
    return MpnsResult(Status.FAILED, error=error, **base)


def transport_failure(description: str, policy: MpnsPolicy = MpnsPolicy()) -> MpnsResult:
    return MpnsResult(Status.FAILED, 0, error="ConnectionError", retryable=True, retry_now=True,
                      minutes_to_delay=policy.unavailable_minutes, description=description)
