"""The one interface every provider (CCS, FCM v1, legacy HTTP, C2DM, MPNS, APNs) offers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ccs.outcome import Listeners, SendResult


class Provider(ABC):
    """Start, stop, send, health and stats: all the supervisor and router know of a provider.

    `token_events` carries TokenEvent values (dead tokens, canonical ids, rate limits).
    """

    name: str = "provider"

    def __init__(self) -> None:
        self.token_events = Listeners()

    @abstractmethod
    def start(self) -> None:
        """Begin work (connect, spawn greenlets); returns without waiting for the network."""

    @abstractmethod
    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, wait up to `timeout` for in-flight work, then close."""

    @abstractmethod
    def send(self, message: Any) -> SendResult:
        """Queue one message; the result resolves to exactly one Outcome."""

    @abstractmethod
    def healthy(self) -> bool:
        """True when a send now could be expected to reach the service."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counters and state, for `stats()`, the admin API and metrics."""
