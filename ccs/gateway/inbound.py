"""Upstream messages and delivery receipts: stored before CCS hears the ack, then handed on.

The CcsClient acks after our handler returns, so storing inside the handler means nothing acked
is ever lost. App handlers then see each stored record once (its `seq` de-duplicates across a
crash between handling and marking it done); a handler that raises gets the record again later
(doubling delay up to RETRY_MAX), so an answer the app could not store is not dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gevent.event import Event

from ccs.gateway.events import EventBus
from ccs.gateway.outbox.base import Store
from ccs.outcome import Listeners

log = logging.getLogger(__name__)

UPSTREAM = "upstream"
RECEIPT = "receipt"
RETRY_MAX = 60.0  # seconds between hand-overs of a record whose handler keeps raising


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """One stored upstream message or receipt; `seq` is its record id."""

    seq: int
    kind: str
    body: dict[str, Any]


def upstream_body(up: Any) -> dict[str, Any]:
    return {"from": up.sender, "message_id": up.message_id, "category": up.category,
            "data": up.data}


def receipt_body(rc: Any) -> dict[str, Any]:
    return {"message_id": rc.message_id, "original_message_id": rc.original_message_id,
            "status": rc.status, "device_token": rc.device_token}


class Inbound:
    def __init__(self, store: Store, bus: EventBus, clock: Callable[[], float] = time.time):
        self.store = store
        self.bus = bus
        self.clock = clock
        self.upstream = Listeners()  # InboundRecord
        self.receipts = Listeners()  # InboundRecord
        self.duplicates = 0
        self.retried = 0  # hand-overs to app handlers that raised (each is tried again)
        self._wake = Event()

    def store_upstream(self, up: Any) -> None:
        """The CcsClient on_upstream handler: store (de-duplicated by sender and id)."""
        self._store(UPSTREAM, f"{up.sender}\x00{up.message_id}", upstream_body(up))

    def store_receipt(self, rc: Any) -> None:
        """The CcsClient on_receipt handler: store (de-duplicated by the dr2: id)."""
        self._store(RECEIPT, rc.message_id, receipt_body(rc))

    def _store(self, kind: str, key: str, body: dict[str, Any]) -> None:
        _, new = self.store.add_event(kind, key, body, self.clock())
        if new:
            self._wake.set()
        else:
            self.duplicates += 1  # CCS re-delivered it; acked again, handled once

    def run(self, poll: float = 5.0) -> None:
        """Hand stored records to app handlers and the event stream (a supervisor child)."""
        while True:
            self._wake.clear()
            busy = False
            wait = poll
            for kind, listeners in ((UPSTREAM, self.upstream), (RECEIPT, self.receipts)):
                events = self.store.pending_events(kind, self.clock(), limit=500)
                done = []
                for e in events:
                    errors = listeners.emit_all(InboundRecord(e.seq, kind, e.body))
                    if errors:  # e.g. the app could not store its answer: hand it over again
                        self.retried += 1
                        now, delay = self.clock(), min(RETRY_MAX, 2.0 ** e.attempts)
                        self.store.event_retry(e.seq, now + delay,
                                               f"{type(errors[0]).__name__}: {errors[0]}", now)
                        wait = min(wait, delay)
                        continue
                    done.append(e.seq)
                    self.bus.publish(kind, {"id": e.seq, **e.body})
                if done:
                    self.store.event_done(done, self.clock())
                busy = busy or bool(done)
            if not busy:
                self._wake.wait(timeout=wait)

    def wake(self) -> None:
        """Look for pending records now (the loop also looks every `poll` seconds)."""
        self._wake.set()
