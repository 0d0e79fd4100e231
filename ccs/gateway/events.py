"""The gateway's live event stream (upstream, receipts, token events, outcomes) for subscribers.

Each subscriber has its own bounded queue: a slow reader loses its oldest events (counted),
never slows the gateway.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gevent.event import Event


@dataclass(slots=True)
class Subscription:
    kinds: frozenset[str] | None
    size: int
    queue: deque[tuple[int, str, dict[str, Any]]] = field(default_factory=deque)
    ready: Event = field(default_factory=Event)
    dropped: int = 0
    closed: bool = False

    def get(self, timeout: float | None = None) -> tuple[int, str, dict[str, Any]] | None:
        """The next event, or None when `timeout` passes first or the bus closed."""
        while not self.queue:
            if self.closed:
                return None
            self.ready.clear()
            if not self.ready.wait(timeout):
                return None
        return self.queue.popleft()

    def __iter__(self) -> Iterator[tuple[int, str, dict[str, Any]]]:
        while (item := self.get()) is not None:
            yield item


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._ids = itertools.count(1)

    def subscribe(self, kinds: set[str] | None = None, size: int = 10000) -> Subscription:
        sub = Subscription(frozenset(kinds) if kinds else None, size)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        sub.ready.set()
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        event_id = next(self._ids)
        for sub in self._subs:
            if sub.kinds is not None and kind not in sub.kinds:
                continue
            if len(sub.queue) >= sub.size:
                sub.queue.popleft()
                sub.dropped += 1
            sub.queue.append((event_id, kind, data))
            sub.ready.set()

    def close(self) -> None:
        for sub in list(self._subs):
            self.unsubscribe(sub)

    def __len__(self) -> int:
        return len(self._subs)
