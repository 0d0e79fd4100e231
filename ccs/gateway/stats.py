"""Gateway statistics, fed by observing outcomes (nothing counted in the send path itself)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ccs.gateway.outbox.base import Record
from ccs.outcome import Outcome

PERCENTILES = (50, 90, 99)


def percentiles(samples: Sequence[float], points: Sequence[int] = PERCENTILES
                ) -> dict[str, float | None]:
    """Nearest-rank percentiles in milliseconds; None without samples."""
    if not samples:
        return {f"p{p}": None for p in points}
    ordered = sorted(samples)
    n = len(ordered)
    return {f"p{p}": round(ordered[min(n - 1, max(0, -(-p * n // 100) - 1))] * 1000, 3)
            for p in points}


class ProviderCounts:
    __slots__ = ("sent", "ok", "errors", "latencies", "by_status")

    def __init__(self, keep: int) -> None:
        self.sent = 0
        self.ok = 0
        self.errors = 0
        self.by_status: dict[str, int] = {}
        self.latencies: deque[float] = deque(maxlen=keep)


class GatewayStats:
    """Observer of (record, outcome, latency) triples from the dispatcher."""

    def __init__(self, keep: int = 4096) -> None:
        self.started = time.monotonic()
        self.keep = keep
        self.providers: dict[str, ProviderCounts] = {}
        self.latencies: deque[float] = deque(maxlen=keep)

    def observe(self, item: tuple[Record, Outcome, float]) -> None:
        _, outcome, latency = item
        c = self.providers.get(outcome.via)
        if c is None:
            c = self.providers[outcome.via] = ProviderCounts(self.keep)
        c.sent += 1
        status = str(outcome.status)
        c.by_status[status] = c.by_status.get(status, 0) + 1
        if outcome.ok:
            c.ok += 1
        else:
            c.errors += 1
        if latency > 0:
            c.latencies.append(latency)
            self.latencies.append(latency)

    def uptime(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def provider(self, name: str) -> dict[str, Any]:
        c = self.providers.get(name) or ProviderCounts(1)
        return {"messages_sent": c.ok, "total_errors": c.errors, "outcomes": dict(c.by_status),
                "latency_ms": percentiles(list(c.latencies))}
