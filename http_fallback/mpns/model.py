"""MPNS notifications: toast, tile (7.x and the 2.0 flip/iconic/cycle templates) and raw."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar
from urllib.parse import urlsplit

MAX_PAYLOAD_BYTES = 3072
# X-NotificationClass: immediate, within 450 s, within 900 s.
CLASS_CODES = {"toast": (2, 12, 22), "tile": (1, 11, 21), "raw": (3, 13, 23)}
DELIVERY = ("immediate", "450", "900")
TARGETS = {"toast": "toast", "tile": "token", "raw": None}


class MessageError(ValueError):
    """Bad input to a notification; the text names the field."""


class _Clear:
    """Marks a tile field to be cleared on the phone (Action="Clear")."""

    def __repr__(self) -> str:
        return "CLEAR"


CLEAR: Any = _Clear()


def _check(obj: Any) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None or value is CLEAR or f.name == "cycle_images":
            continue
        if f.name == "count":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 99:
                raise MessageError("count: must be an integer from 0 to 99")
        elif not isinstance(value, str):
            raise MessageError(f"{f.name}: must be a string")


@dataclass(frozen=True)
class Toast:
    """Text1 (bold title), Text2 (body) and Param (7.5+: page and query to open)."""

    text1: str | None = None
    text2: str | None = None
    param: str | None = None
    kind: ClassVar[str] = "toast"
    elements: ClassVar[tuple[tuple[str, str], ...]] = (
        ("text1", "Text1"), ("text2", "Text2"), ("param", "Param"))

    def __post_init__(self) -> None:
        _check(self)
        if self.param is not None and len(self.param) > 256:
            raise MessageError("param: at most 256 characters")


@dataclass(frozen=True)
class Tile:
    """The 7.x live tile; `id` (7.5+) addresses a secondary tile by its navigation URI."""

    title: str | None = None
    count: int | None = None
    background_image: str | None = None
    back_title: str | None = None
    back_content: str | None = None
    back_background_image: str | None = None
    id: str | None = None
    kind: ClassVar[str] = "tile"
    template: ClassVar[str | None] = None
    elements: ClassVar[tuple[tuple[str, str], ...]] = (
        ("background_image", "BackgroundImage"), ("count", "Count"), ("title", "Title"),
        ("back_background_image", "BackBackgroundImage"), ("back_title", "BackTitle"),
        ("back_content", "BackContent"))

    def __post_init__(self) -> None:
        _check(self)


@dataclass(frozen=True)
class FlipTile(Tile):
    """Windows Phone 8 flip tile (Version 2.0, Template="FlipTile")."""

    small_background_image: str | None = None
    wide_background_image: str | None = None
    wide_back_background_image: str | None = None
    wide_back_content: str | None = None
    template: ClassVar[str | None] = "FlipTile"
    elements: ClassVar[tuple[tuple[str, str], ...]] = (
        ("small_background_image", "SmallBackgroundImage"),
        ("wide_background_image", "WideBackgroundImage"),
        ("wide_back_background_image", "WideBackBackgroundImage"),
        ("wide_back_content", "WideBackContent"), *Tile.elements)


@dataclass(frozen=True)
class IconicTile:
    """Windows Phone 8 iconic tile (Version 2.0, Template="IconicTile")."""

    title: str | None = None
    count: int | None = None
    icon_image: str | None = None
    small_icon_image: str | None = None
    wide_content1: str | None = None
    wide_content2: str | None = None
    wide_content3: str | None = None
    background_color: str | None = None
    id: str | None = None
    kind: ClassVar[str] = "tile"
    template: ClassVar[str | None] = "IconicTile"
    elements: ClassVar[tuple[tuple[str, str], ...]] = (
        ("small_icon_image", "SmallIconImage"), ("icon_image", "IconImage"),
        ("wide_content1", "WideContent1"), ("wide_content2", "WideContent2"),
        ("wide_content3", "WideContent3"), ("count", "Count"), ("title", "Title"),
        ("background_color", "BackgroundColor"))

    def __post_init__(self) -> None:
        _check(self)


@dataclass(frozen=True)
class CycleTile:
    """Windows Phone 8 cycle tile (Version 2.0, Template="CycleTile"): up to nine images."""

    title: str | None = None
    count: int | None = None
    small_background_image: str | None = None
    cycle_images: tuple[str, ...] = ()
    id: str | None = None
    kind: ClassVar[str] = "tile"
    template: ClassVar[str | None] = "CycleTile"
    elements: ClassVar[tuple[tuple[str, str], ...]] = (
        ("small_background_image", "SmallBackgroundImage"), ("count", "Count"),
        ("title", "Title"))

    def __post_init__(self) -> None:
        images = tuple(self.cycle_images)
        if len(images) > 9 or not all(isinstance(i, str) for i in images):
            raise MessageError("cycle_images: at most nine image URIs (strings)")
        object.__setattr__(self, "cycle_images", images)
        _check(self)


@dataclass(frozen=True)
class Raw:
    """A raw notification: bytes handed to the running app as they are."""

    payload: bytes
    kind: ClassVar[str] = "raw"

    def __post_init__(self) -> None:
        payload = self.payload
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if not isinstance(payload, bytes):
            raise MessageError("payload: must be bytes or a string")
        object.__setattr__(self, "payload", payload)


Notification = Toast | Tile | FlipTile | IconicTile | CycleTile | Raw


@dataclass(frozen=True)
class MpnsMessage:
    """One notification to one channel URI (the target). `id` is ours, never sent."""

    channel_uri: str
    notification: Notification
    delivery: str = "immediate"  # or "450" / "900": seconds within which MPNS delivers
    message_id: str | None = None  # X-MessageID, a UUID
    callback_uri: str | None = None  # X-CallbackURI (authenticated channels)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        parts = urlsplit(self.channel_uri if isinstance(self.channel_uri, str) else "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MessageError("channel_uri: must be the http(s) channel URI from the phone")
        if not isinstance(self.notification, (Toast, Tile, IconicTile, CycleTile, Raw)):
            raise MessageError("notification: must be a Toast, Tile, FlipTile, IconicTile, "
                               "CycleTile or Raw")
        if self.delivery not in DELIVERY:
            raise MessageError(f"delivery: must be one of {DELIVERY}")
        if self.message_id is not None:
            try:
                uuid.UUID(self.message_id)
            except (ValueError, TypeError, AttributeError):
                raise MessageError("message_id: X-MessageID must be a UUID") from None

    @property
    def notification_class(self) -> int:
        return CLASS_CODES[self.notification.kind][DELIVERY.index(self.delivery)]
