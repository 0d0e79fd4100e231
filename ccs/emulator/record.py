"""What the emulator saw and did, for tests to assert on. Appends never yield, so greenlet-safe."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
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
    """Everything observable, in order. Lists are append-only while the emulator runs."""

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
    _seen_ids: set[str] = field(default_factory=set, repr=False)

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
            if mid in self._seen_ids:
                self.duplicate_ids.append(mid)
            else:
                self._seen_ids.add(mid)
        self.downstream.append(Downstream(conn_id, payload, time.time()))

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
