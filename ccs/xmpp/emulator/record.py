"""What the emulator saw and did, for tests to assert on. Appends never yield, so greenlet-safe."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Downstream:
    conn_id: int
    payload: dict[str, Any]
    time: float

    @property
    def message_id(self) -> str | None:
        return self.payload.get("message_id")


@dataclass(frozen=True)
class Sent:
    """A gcm message the emulator wrote: kind is ack, nack, receipt, upstream or control."""

    conn_id: int
    kind: str
    payload: dict[str, Any]
    time: float
    redelivery: bool = False


@dataclass(frozen=True)
class AckReceived:
    """An ack from the app server: kind is upstream or receipt (valid) or unknown (406 sent)."""

    conn_id: int
    message_id: str | None
    kind: str
    payload: dict[str, Any]
    time: float


@dataclass(frozen=True)
class Note:
    """Any other event worth a test's eye (auth failure, flow violation, stream/stanza error)."""

    conn_id: int
    detail: str
    time: float


@dataclass
class Record:
    """Everything observable, in order. Lists are append-only while the emulator runs (bounded
    deques when `limit` is set, as `ccs emulate ccs` does)."""

    downstream: list[Downstream] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    acks_received: list[AckReceived] = field(default_factory=list)
    auth_ok: list[Note] = field(default_factory=list)
    auth_failures: list[Note] = field(default_factory=list)
    opened: list[Note] = field(default_factory=list)
    closed: list[Note] = field(default_factory=list)
    flow_violations: list[Note] = field(default_factory=list)
    stanza_errors: list[Note] = field(default_factory=list)
    stream_errors: list[Note] = field(default_factory=list)
    ignored: list[Note] = field(default_factory=list)
    duplicate_ids: list[str] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)  # never trimmed: downstream, ack...
    limit: int | None = None  # keep only the newest `limit` entries per list (long runs)
    _seen_ids: dict[str, None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.limit is not None:
            for f in fields(self):
                if isinstance(getattr(self, f.name), list):
                    setattr(self, f.name, deque(getattr(self, f.name), maxlen=self.limit))

    @staticmethod
    def now() -> float:
        return time.time()

    @property
    def duplicates(self) -> int:
        """How many downstream messages reused a message_id already seen from this sender."""
        return len(self.duplicate_ids)

    def add_downstream(self, conn_id: int, payload: dict[str, Any]) -> None:
        mid = payload.get("message_id")
        if isinstance(mid, str):
            seen = self._seen_ids
            if mid in seen:
                self.duplicate_ids.append(mid)
            else:
                seen[mid] = None
                if self.limit is not None and len(seen) > 10 * self.limit:
                    del seen[next(iter(seen))]  # forget the oldest id
        self.downstream.append(Downstream(conn_id, payload, time.time()))
        self.totals["downstream"] += 1

    def add_sent(self, sent: Sent) -> None:
        self.sent.append(sent)
        self.totals[sent.kind] += 1

    def note(self, bucket: list[Note], conn_id: int, detail: str) -> None:
        bucket.append(Note(conn_id, detail, time.time()))

    # convenience views ---------------------------------------------------------------------
    def of_kind(self, kind: str) -> list[Sent]:
        return [s for s in self.sent if s.kind == kind]

    @property
    def acks(self) -> list[Sent]:
        return self.of_kind("ack")

    @property
    def nacks(self) -> list[Sent]:
        return self.of_kind("nack")

    def answered_ids(self) -> set[str]:
        """message_ids of downstream messages that got an ack or a nack."""
        return {s.payload.get("message_id") for s in self.sent if s.kind in ("ack", "nack")}

    def downstream_ids(self) -> list[str]:
        return [d.payload.get("message_id") for d in self.downstream]
