"""Exponential backoff with Retry-After, shared by the retired HTTP providers (pure)."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

from ccs.backoff import added_jitter, exponential


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between tries: initial * factor**(n-1), capped at maximum, never under Retry-After.

    `attempts` counts every try including the first. Delays are configurable so tests run fast.
    """

    initial: float = 1.0
    maximum: float = 64.0
    factor: float = 2.0
    attempts: int = 5
    jitter: float = 0.1  # fraction of the delay added at random, so retries do not bunch up

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0:
            raise ValueError("backoff delays must not be negative")
        if self.factor < 1:
            raise ValueError("backoff factor must be at least 1")
        if self.attempts < 1:
            raise ValueError("backoff attempts must be at least 1")

    def delay(self, retry: int, retry_after: float | None = None, rand: float = 0.0) -> float:
        """Seconds to wait before retry number `retry` (1 = first retry); `rand` in [0, 1)."""
        base = exponential(retry, self.initial, self.maximum, self.factor)
        return max(added_jitter(base, rand, self.jitter), retry_after or 0.0)

    def can_retry(self, attempts_made: int) -> bool:
        return attempts_made < self.attempts


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After value (delta-seconds or HTTP-date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone takes "²", which float refuses
        seconds = float(value)
        return seconds if seconds != float("inf") else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)
