"""CcsClient: what a gevent program calls to talk to Google's CCS over persistent XMPP sessions.

    client = CcsClient(CcsConfig.from_env())
    client.on_upstream(store_and_handle)      # acked after the handler returns
    client.start()
    outcome = client.send(build_message("token", data={"k": "v"})).get()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent
from gevent.event import Event

from ccs.outcome import SendResult
from ccs.provider import Provider
from ccs.xmpp.config import DEFAULT_HOST, CcsConfig
from ccs.xmpp.message import validate_downstream
from ccs.xmpp.pool import Entry, Pool
from ccs.xmpp.protocol import Receipt, Upstream

__all__ = ["DEFAULT_HOST", "CcsClient", "CcsConfig"]


class CcsClient(Provider):
    """A pool of CCS sessions behind one send(); a Provider named "ccs"."""

    name = "ccs"

    def __init__(self, config: CcsConfig) -> None:
        super().__init__()
        self.config = config
        self._pool = Pool(config, self.ready_changed, self.token_events)
        self._ready = Event()
        self._started_at: float | None = None
        self._sweeper: gevent.Greenlet | None = None
        self._down_since: float | None = None  # since when no session has been usable

    def on_upstream(self, fn: Callable[[Upstream], Any]) -> None:
        """fn(Upstream) runs in a greenlet; the ack goes out after it returns, none if it raises."""
        self._pool.upstream_handler = fn

    def on_receipt(self, fn: Callable[[Receipt], Any]) -> None:
        """fn(Receipt) for delivery receipts; acked with the full dr2: id after it returns."""
        self._pool.receipt_handler = fn

    # Provider --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._started_at is not None:
            return
        self._started_at = time.monotonic()
        self._down_since = self._started_at
        self._pool.start()
        self._sweeper = gevent.spawn(self._sweep)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until at least one session is logged in; False on timeout."""
        return self._ready.wait(timeout)

    def send(self, message: Mapping[str, Any]) -> SendResult:
        """Validate (InvalidMessage names the field), queue, and return the pending outcome."""
        if self._started_at is None:
            raise RuntimeError("CcsClient.send() before start()")
        msg = validate_downstream(message)
        result = SendResult(msg["message_id"])
        cfg = self.config
        self._pool.accept(Entry(msg, result, time.monotonic(), cfg.max_retry_seconds,
                                cfg.zero_ttl_grace))
        return result

    def stop(self, timeout: float = 10.0) -> None:
        if self._sweeper is not None:
            self._sweeper.kill()
        self._pool.stop(timeout)
        self._ready.clear()

    def healthy(self) -> bool:
        return any(s.usable for s in self._pool.sessions)

    def drain(self, session_id: int | None = None) -> int:
        return self._pool.drain(session_id)

    def stats(self) -> dict[str, Any]:
        pool = self._pool
        sessions = [
            {"id": s.id, "state": s.state, "pending": s.pending, "sent": s.sent,
             "jid": s.jid, "close_reason": s.close_reason}
            for s in pool.sessions
        ]
        return {
            "provider": self.name,
            "uptime": time.monotonic() - self._started_at if self._started_at else 0.0,
            "logged_in": self.healthy(),
            "sessions": sessions,
            "in_flight": sum(s["pending"] for s in sessions),
            "messages_in_queue": len(pool.backlog) + len(pool.scheduled),
            **pool.counters,
        }

    # internals -------------------------------------------------------------------------------

    def ready_changed(self) -> None:
        if self.healthy():
            self._ready.set()
            self._down_since = None
        else:
            self._ready.clear()
            if self._down_since is None:
                self._down_since = time.monotonic()

    def _sweep(self) -> None:
        limit = self.config.no_session_timeout
        ack_timeout = self.config.ack_timeout
        tick = min(x for x in (1.0, limit, ack_timeout / 2) if x > 0)
        while True:
            gevent.sleep(tick)
            if ack_timeout > 0:
                self._pool.check_acks(time.monotonic(), ack_timeout)
            if self._pool.backlog and not self.healthy():
                down = time.monotonic() - (self._down_since or time.monotonic())
                self._pool.sweep_backlog(hand_back=limit > 0 and down >= limit)
