"""The pending window: downstream messages sent on one session and not yet answered. Pure.

CCS allows at most 100 un-answered downstream messages per connection; acks we send for
upstream messages and receipts do not count.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

CCS_MAX_PENDING = 100

T = TypeVar("T")


class WindowFull(Exception):
    pass


class Window(Generic[T]):
    __slots__ = ("capacity", "_items")

    def __init__(self, capacity: int = CCS_MAX_PENDING) -> None:
        if not 1 <= capacity <= CCS_MAX_PENDING:
            raise ValueError(f"window must be 1..{CCS_MAX_PENDING}, got {capacity}")
        self.capacity = capacity
        self._items: dict[str, T] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items.values()))

    @property
    def room(self) -> int:
        return self.capacity - len(self._items)

    def add(self, message_id: str, item: T) -> None:
        if len(self._items) >= self.capacity:
            raise WindowFull(message_id)
        if message_id in self._items:
            raise KeyError(f"message_id {message_id!r} already pending")
        self._items[message_id] = item

    def pop(self, message_id: str) -> T | None:
        return self._items.pop(message_id, None)

    def oldest(self) -> T | None:
        """The item waiting longest (sent first), or None when the window is empty."""
        return next(iter(self._items.values()), None)

    def take_all(self) -> list[T]:
        items = list(self._items.values())
        self._items.clear()
        return items
