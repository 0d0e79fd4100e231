"""An in-memory Store for tests and benchmarks: same behaviour, nothing survives a restart."""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from ccs.gateway.outbox.base import (
    IN_FLIGHT,
    QUEUED,
    STATES,
    TERMINAL,
    Event,
    Finish,
    NewMessage,
    Record,
    Store,
)
from ccs.outcome import Status


class MemoryStore(Store):
    def __init__(self) -> None:
        self._records: dict[str, Record] = {}
        self._queues: dict[str, deque[str]] = {}
        self._events: dict[int, Event] = {}
        self._event_keys: dict[tuple[str, str], int] = {}
        self._done: set[int] = set()
        self._seq = 0

    def add(self, items: Sequence[NewMessage], now: float) -> list[bool]:
        out = []
        for m in items:
            if m.id in self._records:
                out.append(False)
                continue
            self._records[m.id] = Record(
                id=m.id, lane=m.lane, payload=dict(m.payload), to=m.to, created_at=now,
                updated_at=now, expires_at=m.expires_at)
            self._queues.setdefault(m.lane, deque()).append(m.id)
            out.append(True)
        return out

    def claim(self, lane: str, limit: int, now: float) -> tuple[list[Record], list[Record]]:
        q = self._queues.get(lane)
        claimed: list[Record] = []
        expired: list[Record] = []
        while q and len(claimed) < limit:
            r = self._records[q.popleft()]
            if r.state != QUEUED:
                continue
            r.updated_at = now
            if r.expires_at is not None and r.expires_at <= now:
                r.state = str(Status.EXPIRED)
                r.error = "time_to_live passed before it was sent"
                expired.append(copy.copy(r))
                continue
            r.state = IN_FLIGHT
            r.attempts += 1
            claimed.append(copy.copy(r))
        return claimed, expired

    def finish(self, done: Sequence[Finish], now: float) -> None:
        for f in done:
            r = self._records.get(f.id)
            if r is None or r.state in TERMINAL:
                continue
            o = f.outcome
            r.state, r.via, r.updated_at = f.state, o.via, now
            r.provider_message_id, r.error = o.message_id, o.error
            r.description, r.canonical_id = o.description, o.canonical_id

    def release(self, ids: Sequence[str], now: float) -> None:
        for id_ in ids:
            r = self._records.get(id_)
            if r is not None and r.state == IN_FLIGHT:
                r.state, r.updated_at, r.resent = QUEUED, now, r.resent + 1
                self._queues.setdefault(r.lane, deque()).appendleft(id_)

    def recover(self, now: float) -> int:
        n = 0
        for r in self._records.values():
            if r.state == IN_FLIGHT:
                r.state, r.resent, r.updated_at = QUEUED, r.resent + 1, now
                self._queues.setdefault(r.lane, deque()).appendleft(r.id)
                n += 1
        return n

    def get(self, id: str) -> Record | None:
        r = self._records.get(id)
        return copy.copy(r) if r else None

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        resent = 0
        for r in self._records.values():
            out[r.state] += 1
            resent += r.resent
        out["resent"] = resent
        return out

    def lanes_with_queued(self) -> list[str]:
        return [lane for lane, q in self._queues.items()
                if any(self._records[i].state == QUEUED for i in q)]

    def add_event(self, kind: str, key: str, body: Mapping[str, Any], now: float
                  ) -> tuple[int, bool]:
        seq = self._event_keys.get((kind, key))
        if seq is not None:
            return seq, False
        self._seq += 1
        self._events[self._seq] = Event(self._seq, kind, key, dict(body), created_at=now,
                                        next_at=now)
        self._event_keys[(kind, key)] = self._seq
        return self._seq, True

    def pending_events(self, kind: str, now: float, limit: int = 100) -> list[Event]:
        out = [copy.copy(e) for s, e in sorted(self._events.items())
               if e.kind == kind and s not in self._done and e.next_at <= now]
        return out[:limit]

    def event_done(self, seqs: Sequence[int], now: float) -> None:
        self._done.update(seqs)

    def event_retry(self, seq: int, next_at: float, error: str, now: float) -> None:
        e = self._events[seq]
        e.attempts += 1
        e.next_at, e.error = next_at, error

    def event_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s, e in self._events.items():
            if s not in self._done:
                out[e.kind] = out.get(e.kind, 0) + 1
        return out

    def close(self) -> None:
        pass
