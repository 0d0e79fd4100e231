"""The one interface every provider (CCS, FCM v1, legacy HTTP, C2DM, MPNS, APNs) offers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

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


# What some providers can do beyond the interface: the gateway asks with isinstance(), and a
# plugin's provider gains a capability by having the method (no base class to inherit).
@runtime_checkable
class TakesUpstream(Protocol):
    """Delivers upstream (device to server) messages to one callback, stored before acked."""

    def on_upstream(self, fn: Callable[[Any], Any]) -> None: ...


@runtime_checkable
class TakesReceipts(Protocol):
    """Delivers delivery receipts to one callback, stored before acked."""

    def on_receipt(self, fn: Callable[[Any], Any]) -> None: ...


@runtime_checkable
class Drains(Protocol):
    """Can move its messages off a connection the service is closing (CCS draining)."""

    def drain(self, session_id: int | None = None) -> int: ...


@runtime_checkable
class WaitsReady(Protocol):
    """Can say when its first connection is usable."""

    def wait_ready(self, timeout: float | None = None) -> bool: ...
