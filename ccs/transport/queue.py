"""WorkQueue: the pool's requests waiting for a stream, shared by its connections' writers.

A deque rather than gevent's Queue: requests a connection took but could not open (a limit
lowered meanwhile) go back to the front, ahead of newer work, for whichever connection has room.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from gevent.event import Event


class WorkQueue:
    __slots__ = ("_items", "_ready")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._ready = Event()

    def put(self, item: Any) -> None:
        self._items.append(item)
        self._ready.set()

    def put_front(self, items: list[Any]) -> None:
        """Return items taken but not sent, keeping their order, ahead of everything else."""
        if items:
            self._items.extendleft(reversed(items))
            self._ready.set()

    def take(self, n: int) -> list[Any]:
        """Up to n items from the front, without waiting."""
        items = self._items
        if n >= len(items):
            out = list(items)
            items.clear()
        else:
            out = [items.popleft() for _ in range(max(0, n))]
        if not items:
            self._ready.clear()
        return out

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until something is queued; False when `timeout` passed first."""
        if self._items:
            return True
        self._ready.clear()
        self._ready.wait(timeout)
        return bool(self._items)

    def remove_if(self, test: Any) -> list[Any]:
        """Take out every item for which test(item) is true (deadline sweeps)."""
        kept: deque[Any] = deque()
        out = []
        for item in self._items:
            (out if test(item) else kept).append(item)
        if out:
            self._items = kept
            if not kept:
                self._ready.clear()
        return out

    def drain(self) -> list[Any]:
        return self.take(len(self._items))

    def qsize(self) -> int:
        return len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items))

    def extend(self, items: Iterable[Any]) -> None:
        for item in items:
            self.put(item)
