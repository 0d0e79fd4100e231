"""The sent-notification cache of one connection (pure).

The binary gateway never says "accepted": after an error response naming identifier X, the
ones written before X went through, X failed (for Shutdown, X is the last that went through)
and everything written after X was discarded and must be sent again. So every notification
written stays here until it is resolved: by such an error, or by its quiet period passing
from the time its bytes were known to have reached the gateway's side (the caller says how
far that is). Resolved entries stay too, oldest first out once the cache holds
more than `size`, so a late error can still find what followed it and send it again.
Nothing unresolved is ever pushed out: the writer waits for room, or the cache grows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ErrorResolution:
    accepted: list[Any] = field(default_factory=list)  # unresolved, written before X: ok
    failed: Any | None = None  # X, still unresolved (None for Shutdown or when resolved)
    late: Any | None = None  # X, already resolved by its quiet period: the error came late
    resend: list[Any] = field(default_factory=list)  # written after X: discarded, send again
    resend_resolved: int = 0  # how many of `resend` had already been resolved


@dataclass
class _Entry:
    ident: int
    item: Any
    end: int  # the connection's byte count once this one is written
    reached: float | None = None  # when the gateway's side was first known to hold it
    resolved: bool = False


class SentCache:
    """Entries (identifier, item, time written) in the order written; identifiers increase."""

    def __init__(self, size: int = 1000) -> None:
        if size < 1:
            raise ValueError("SentCache size must be >= 1")
        self.size = size
        self.pending = 0  # unresolved entries
        self._entries: deque[_Entry] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def has_room(self) -> bool:
        return self.pending < self.size

    def grow(self) -> int:
        """Double the size (the writer waited long enough); returns the new size."""
        self.size *= 2
        return self.size

    def add(self, ident: int, item: Any, end: int) -> None:
        self._entries.append(_Entry(ident, item, end))
        self.pending += 1
        self._trim()

    def unresolved(self) -> list[Any]:
        return [e.item for e in self._entries if not e.resolved]

    def settle(self, reached: int | None, now: float, quiet: float) -> list[Any]:
        """Note the time on entries within the first `reached` bytes (None: no news), then
        resolve those that have been there for `quiet` seconds; returns the resolved items."""
        done = []
        for e in self._entries:
            if e.resolved:
                continue
            if e.reached is None:
                if reached is None or e.end > reached:
                    break  # written in order: the rest are further on
                e.reached = now
            if now - e.reached < quiet:
                if reached is None:
                    break
                continue
            e.resolved = True
            done.append(e.item)
        self.pending -= len(done)
        self._trim()
        return done

    def on_error(self, ident: int, shutdown: bool = False) -> ErrorResolution:
        """Split at `ident` and empty the cache (the connection is over)."""
        res = ErrorResolution()
        for e in self._entries:
            if e.ident < ident or (shutdown and e.ident == ident):
                if not e.resolved:
                    res.accepted.append(e.item)
            elif e.ident == ident:
                if e.resolved:
                    res.late = e.item
                else:
                    res.failed = e.item
            else:
                res.resend.append(e.item)
                res.resend_resolved += e.resolved
        self.clear()
        return res

    def clear(self) -> list[Any]:
        """Empty the cache; returns the unresolved items (their fate is unknown)."""
        left = self.unresolved()
        self._entries.clear()
        self.pending = 0
        return left

    def _trim(self) -> None:
        while len(self._entries) > self.size and self._entries[0].resolved:
            self._entries.popleft()
