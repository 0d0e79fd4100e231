"""The sent-notification cache (pure): after an error response, everything sent after the
failing identifier was discarded by the gateway and must be sent again."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ErrorResolution:
    failed: Any | None  # the notification the error names, if still cached
    resend: list[Any] = field(default_factory=list)  # sent after it: discarded by the gateway
    accepted: list[Any] = field(default_factory=list)  # sent before it: processed
    lost: int = 0  # estimate of notifications that fell out of the cache (cacheTooSmall)
    grew_to: int | None = None  # the new cache size, when it adjusted itself


class SentCache:
    """FIFO of (identifier, item) of the last `size` notifications written."""

    def __init__(self, size: int = 100, auto_adjust: bool = True) -> None:
        self.size = size
        self.auto_adjust = auto_adjust
        self.items: deque[tuple[int, Any]] = deque()

    def add(self, identifier: int, item: Any) -> Any | None:
        """Remember one; returns the item pushed out of the cache, if any."""
        self.items.append((identifier, item))
        if len(self.items) > self.size:
            return self.items.popleft()[1]
        return None

    def on_error(self, identifier: int, shutdown: bool = False) -> ErrorResolution:
        """Split the cache at `identifier` (for Shutdown, the last one that succeeded)."""
        ids = [i for i, _ in self.items]
        if identifier in ids:
            at = ids.index(identifier)
            items = [item for _, item in self.items]
            self.items.clear()
            if shutdown:  # the identifier is the last one that succeeded
                return ErrorResolution(None, items[at + 1:], items[:at + 1])
            return ErrorResolution(items[at], items[at + 1:], items[:at])
        # fallen out of the cache: resend all we still hold; estimate what was lost
        resend = [item for _, item in self.items]
        lost = (ids[0] - identifier) if ids and identifier < ids[0] else 0
        res = ErrorResolution(None, resend, lost=max(lost, 1))
        if self.auto_adjust and lost:
            self.size += lost + 10
            res.grew_to = self.size
        self.items.clear()
        return res
