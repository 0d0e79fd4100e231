"""Outcome values shared by every provider: what became of one message.

A rejection is a value, not an exception; exceptions are for programming and configuration
errors. The four status words are the only ones the console and API ever show.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gevent.event import AsyncResult

log = logging.getLogger(__name__)


class Status(StrEnum):
    OK = "ok"  # accepted or acked by the service
    FAILED = "failed"  # a final answer, or retries used up
    EXPIRED = "expired"  # its time to live passed before it was accepted
    UNKNOWN = "unknown"  # sent, but no answer will come


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message. `error` is the provider's own code, None on success."""

    status: Status
    via: str
    to: str | None = None
    message_id: str | None = None
    error: str | None = None
    description: str | None = None
    retryable: bool = False
    canonical_id: str | None = None
    attempts: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def as_json(self) -> dict[str, Any]:
        """The one JSON shape of a result line, for every provider."""
        return {
            "message_id": self.message_id,
            "to": self.to,
            "via": self.via,
            "status": str(self.status),
            "error": self.error,
            "canonical_id": self.canonical_id,
            "attempts": self.attempts,
        }


class SendResult:
    """A pending outcome a greenlet can wait on or hang callbacks on; resolves exactly once."""

    __slots__ = ("_result", "key")

    def __init__(self, key: str | None = None) -> None:
        self._result: AsyncResult = AsyncResult()
        self.key = key

    def resolve(self, outcome: Outcome) -> bool:
        """Set the outcome; the first one wins. Returns False when it was already set."""
        if self._result.ready():
            return False
        self._result.set(outcome)
        return True

    def ready(self) -> bool:
        return self._result.ready()

    def get(self, timeout: float | None = None) -> Outcome:
        """Wait for the outcome; raises gevent.Timeout when `timeout` passes first."""
        return self._result.get(timeout=timeout)

    def add_callback(self, fn: Callable[[Outcome], Any]) -> None:
        """Call fn(outcome) once the outcome is known (at once if it already is)."""
        self._result.rawlink(lambda r: fn(r.value))


class TokenEventKind(StrEnum):
    UNREGISTERED = "unregistered"  # the token is gone: stop sending to it
    INVALID = "invalid"  # the token is malformed or not for this sender/topic
    CANONICAL = "canonical"  # replace the token with new_token
    RATE_LIMITED = "rate_limited"  # too many messages to this token: backing off


@dataclass(frozen=True, slots=True)
class TokenEvent:
    kind: TokenEventKind
    provider: str
    token: str
    new_token: str | None = None
    reason: str | None = None
    message_id: str | None = None
    at: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "provider": self.provider,
            "token": self.token,
            "new_token": self.new_token,
            "reason": self.reason,
            "message_id": self.message_id,
            "at": self.at,
        }


class Listeners:
    """Observers of an event stream; one failing observer never breaks the sender."""

    __slots__ = ("_fns",)

    def __init__(self) -> None:
        self._fns: list[Callable[[Any], Any]] = []

    def add(self, fn: Callable[[Any], Any]) -> None:
        self._fns.append(fn)

    def remove(self, fn: Callable[[Any], Any]) -> None:
        self._fns.remove(fn)

    def __bool__(self) -> bool:
        return bool(self._fns)

    def emit(self, event: Any) -> None:
        self.emit_all(event)

    def emit_all(self, event: Any) -> list[Exception]:
        """Call every observer; returns what they raised (each is logged, none stops the rest)."""
        errors = []
        for fn in list(self._fns):
            try:
                fn(event)
            except Exception as exc:
                log.exception("listener %r failed", fn)
                errors.append(exc)
        return errors
