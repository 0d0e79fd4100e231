"""The outbox Store interface: small enough that a Redis Streams backend fits behind it.

A message moves queued -> in_flight -> exactly one terminal state (ok, failed, expired,
unknown: the ccs.outcome.Status words). Inbound records (upstream messages, receipts) and
outbound webhook posts are "events": stored first, handled after, marked done.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ccs.outcome import Outcome, Status

QUEUED = "queued"
IN_FLIGHT = "in_flight"
TERMINAL = frozenset(str(s) for s in Status)
STATES = (QUEUED, IN_FLIGHT, *sorted(TERMINAL))


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One message to store: its id, its lane (requested provider or 'fcm') and payload."""

    id: str
    lane: str
    payload: Mapping[str, Any]
    to: str | None = None
    expires_at: float | None = None


@dataclass(slots=True)
class Record:
    """A stored message and what has become of it so far."""

    id: str
    lane: str
    payload: dict[str, Any]
    state: str = QUEUED
    to: str | None = None
    attempts: int = 0
    resent: int = 0  # times it went back to the queue while in flight (crash or stop)
    created_at: float = 0.0
    updated_at: float = 0.0
    expires_at: float | None = None
    via: str | None = None
    provider_message_id: str | None = None
    error: str | None = None
    description: str | None = None
    canonical_id: str | None = None
    seq: int = 0  # the store's position for it (0: unknown)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "lane": self.lane, "to": self.to,
            "via": self.via, "attempts": self.attempts, "resent": self.resent,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "expires_at": self.expires_at, "provider_message_id": self.provider_message_id,
            "error": self.error, "description": self.description,
            "canonical_id": self.canonical_id,
        }


def outcome_of(r: Record) -> Outcome:
    """The Outcome a terminal record stands for."""
    return Outcome(Status(r.state), via=r.via or "outbox", to=r.to,
                   message_id=r.provider_message_id or r.id, error=r.error,
                   description=r.description, canonical_id=r.canonical_id, attempts=r.attempts)


@dataclass(frozen=True, slots=True)
class Finish:
    """A terminal outcome to record for message `id`."""

    id: str
    outcome: Outcome
    seq: int = 0  # Record.seq when known: a faster lookup than the id

    @property
    def state(self) -> str:
        return str(self.outcome.status)


@dataclass(slots=True)
class Event:
    """A stored inbound record (upstream, receipt) or outbound post (webhook)."""

    seq: int
    kind: str
    key: str
    body: dict[str, Any]
    attempts: int = 0
    next_at: float = 0.0
    error: str | None = None
    created_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Unreadable(dict):  # type: ignore[type-arg]
    """A stored payload that cannot be decoded: its message fails, its lane goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def load_payload(text: str | bytes) -> dict[str, Any]:
    """A stored payload, or Unreadable (never an exception: one bad row must not stop a claim)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        return Unreadable(f"{type(exc).__name__}: {str(exc)[:200]}")
    return value if isinstance(value, dict) else Unreadable("not a JSON object")


class StoreUnavailable(RuntimeError):
    """The store cannot be written now (Redis restarting, failing over, unreachable): nothing
    was stored; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class Store(ABC):
    """Durable message and event storage; every method returns once its change is committed."""

    # messages
    @abstractmethod
    def add(self, items: Sequence[NewMessage], now: float) -> list[bool]:
        """Store new messages as queued; False for an id already stored (left unchanged)."""

    @abstractmethod
    def claim(self, lane: str, limit: int, now: float) -> tuple[list[Record], list[Record]]:
        """Move up to `limit` oldest queued messages of `lane` to in_flight (attempts + 1).

        Returns (claimed, expired): queued messages whose expiry passed end as expired instead.
        """

    @abstractmethod
    def finish(self, done: Sequence[Finish], now: float) -> None:
        """Record terminal outcomes; a message already terminal keeps its first outcome."""

    @abstractmethod
    def release(self, ids: Sequence[str], now: float) -> None:
        """Put in-flight messages back in the queue (a clean stop that could not wait);
        each may have reached the service, so it counts as resent like after a crash."""

    @abstractmethod
    def recover(self, now: float) -> int:
        """At open: every in_flight message goes back to queued (resent + 1); returns how many.

        A store shared by many gateways (Redis) re-queues only what gateways gone silent held."""

    @abstractmethod
    def get(self, id: str) -> Record | None: ...

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Messages per state (every state in STATES present) and 'resent' (total)."""

    @abstractmethod
    def lanes_with_queued(self) -> list[str]: ...

    # events
    @abstractmethod
    def add_event(self, kind: str, key: str, body: Mapping[str, Any], now: float
                  ) -> tuple[int, bool]:
        """Store an event once per (kind, key); returns (seq, newly stored)."""

    @abstractmethod
    def pending_events(self, kind: str, now: float, limit: int = 100) -> list[Event]:
        """Events of `kind` not yet done whose next_at has come, oldest first."""

    @abstractmethod
    def event_done(self, seqs: Sequence[int], now: float) -> None: ...

    @abstractmethod
    def event_retry(self, seq: int, next_at: float, error: str, now: float) -> None:
        """A failed attempt: try again at `next_at`, keeping the error."""

    @abstractmethod
    def event_counts(self) -> dict[str, int]:
        """Pending (not done) events per kind."""

    @abstractmethod
    def close(self) -> None: ...
