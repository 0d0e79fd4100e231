"""N sessions to one CCS endpoint: load spreading, the 100-pending cap, draining failover,
reconnects, retries. The decisions come from the pure modules (retry, protocol, window).

Sessions tell the pool what happened through the SessionListener methods (session_*); the pool
asks them through their methods and tells its owner (the client) through the callbacks it was
given. Everything runs in the sessions' reader greenlets and a few timers: an ack frees a window
slot and the same greenlet sends the next queued message on that session, so a busy pool needs
no dispatcher greenlet and no hand-over per message.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from gevent.pool import Group

from ccs.outcome import Listeners, Outcome, SendResult, Status, TokenEvent, TokenEventKind
from ccs.xmpp import protocol
from ccs.xmpp.message import MAX_TTL, InvalidMessage
from ccs.xmpp.retry import (
    NackAction,
    RetryPolicy,
    TargetThrottle,
    classify_nack,
    classify_stanza_error,
)
from ccs.xmpp.session import Session
from ccs.xmpp.stream import GcmReceived, StanzaError

if TYPE_CHECKING:
    from ccs.xmpp.config import CcsConfig

log = logging.getLogger(__name__)

VIA = "ccs"
SEEN_UPSTREAM_MAX = 50_000  # (from, message_id) pairs remembered to drop re-deliveries


class Entry:
    """One accepted downstream message on its way to exactly one outcome."""

    __slots__ = ("message_id", "to", "json", "result", "attempts", "accepted_at", "deadline",
                 "sent_at")

    def __init__(self, message: dict[str, Any], result: SendResult, now: float,
                 max_retry_seconds: float, zero_ttl_grace: float) -> None:
        self.message_id: str = message["message_id"]
        self.to: str = message.get("to") or message.get("condition") or ""
        self.json = protocol.downstream_json(message)
        self.result = result
        self.attempts = 0
        self.accepted_at = now
        # time_to_live 0 means "now or never": a short grace covers normal queueing.
        ttl = message.get("time_to_live", MAX_TTL)
        self.deadline = now + (min(ttl, max_retry_seconds) if ttl else zero_ttl_grace)
        self.sent_at = 0.0


class Pool:
    """`ready_changed()` is called when a session may have become usable or unusable;
    `token_events` gets canonical ids and dead tokens; upstream messages and receipts go to
    `upstream_handler` / `receipt_handler` (unset: left un-acked for CCS to re-deliver)."""

    def __init__(self, config: CcsConfig, ready_changed: Callable[[], None],
                 token_events: Listeners) -> None:
        self.config = config
        self._ready_changed = ready_changed
        self._token_events = token_events
        self.upstream_handler: Callable[[protocol.Upstream], Any] | None = None
        self.receipt_handler: Callable[[protocol.Receipt], Any] | None = None
        self.sessions: list[Session[Entry]] = []  # every session not yet closed, draining ones too
        self.backlog: deque[Entry] = deque()
        self.policy = RetryPolicy(initial=config.retry_initial,
                                  max_retry_seconds=config.max_retry_seconds)
        self.throttle = TargetThrottle(initial=config.retry_initial)
        self.greenlets = Group()
        self.handlers = gevent.pool.Pool(config.handler_concurrency)
        self.scheduled: set[Entry] = set()
        self.active: dict[str, Entry] = {}  # message_id -> entry, until its outcome
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._rand = random.Random()
        self._stopping = False
        self._leases: dict[Session[Entry], Callable[[], None]] = {}  # session -> lease give-back
        self.counters: dict[str, int] = dict.fromkeys(
            ("sent", "acked", "nacked", "retried", "resent_after_loss", "expired", "failed",
             "unknown", "upstream", "receipts", "duplicates_dropped", "unexpected_acks",
             "reconnects", "auth_failures", "drains", "stanza_errors", "sent_on_unusable",
             "lease_waits", "ack_timeouts"), 0)

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        for slot in range(self.config.connections):
            self.greenlets.spawn(self._slot, slot)

    def stop(self, timeout: float) -> None:
        """Stop taking work, let pending answers arrive until `timeout`, then close."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        while any(s.pending for s in self.sessions) and time.monotonic() < deadline:
            gevent.sleep(0.01)
        for session in list(self.sessions):
            session.close("client stopping")
        self.greenlets.kill(block=True, timeout=timeout)
        for give_back in self._leases.values():  # sessions killed before their close
            give_back()
        self._leases.clear()
        self.handlers.kill(block=True, timeout=timeout)
        for entry in list(self.backlog) + list(self.scheduled):
            self._final(entry, Status.FAILED, "NOT_SENT", "client stopped before sending",
                        retryable=True)
        self.backlog.clear()
        self.scheduled.clear()

    def _slot(self, slot: int) -> None:
        """Keep one usable session in this slot: replace at once on drain, back off on loss."""
        failures = 0
        while not self._stopping:
            give_back = self._lease()
            if give_back is False:  # a budget shared with other gateways is spent: wait
                gevent.sleep(self.config.reconnect_initial * (0.5 + self._rand.random() / 2))
                continue
            session: Session[Entry] = Session(self.config, self)
            if give_back is not None:
                self._leases[session] = give_back
            self.sessions.append(session)
            self.greenlets.spawn(session.run)
            session.retired.wait()
            if self._stopping:
                return
            if session.draining:
                continue  # the draining session lives on until the server closes it
            if session.ready.is_set() and (session.answered or session.lived() > 60.0):
                failures = 0  # it worked for a while: start backing off afresh
            failures += 1
            self.counters["reconnects"] += 1
            delay = min(self.config.reconnect_max,
                        self.config.reconnect_initial * 2 ** (failures - 1))
            gevent.sleep(delay * (0.5 + self._rand.random() / 2))

    def _lease(self) -> Callable[[], None] | None | bool:
        """A lease for one more session (its give-back), None without a budget, False when
        the budget is spent or cannot be asked."""
        if self.config.lease is None:
            return None
        try:
            give_back = self.config.lease()
        except Exception:
            log.exception("cannot take a CCS connection lease; trying again")
            give_back = None
        if give_back is None:
            self.counters["lease_waits"] += 1
            return False
        return give_back

    # sending ---------------------------------------------------------------------------------

    def accept(self, entry: Entry) -> None:
        """A new message from the app; its message_id must not be pending already."""
        if entry.message_id in self.active:
            raise InvalidMessage("message_id", "already pending: message ids must be unique")
        self.active[entry.message_id] = entry
        self.submit(entry)

    def submit(self, entry: Entry) -> None:
        if self._stopping:
            self._final(entry, Status.FAILED, "NOT_SENT", "client stopping", retryable=True)
            return
        now = time.monotonic()
        until = self.throttle.ready_at(entry.to, now) if len(self.throttle) else None
        if until is not None:
            self._schedule(entry, until - now)
            return
        if not self.backlog:
            session = self._pick()
            if session is not None:
                self._send_on(session, entry)
                return
        self.backlog.append(entry)

    def _pick(self) -> Session[Entry] | None:
        best = None
        room = 0
        for s in self.sessions:
            if s.usable and s.room > room:
                best, room = s, s.room
        return best

    def _send_on(self, session: Session[Entry], entry: Entry) -> None:
        entry.attempts += 1
        entry.sent_at = time.monotonic()
        self.counters["sent"] += 1
        if not session.usable:  # a bug if it ever happens: counted so tests can see it
            self.counters["sent_on_unusable"] += 1
        session.send(entry.message_id, entry.json, entry)

    def _pump(self, session: Session[Entry]) -> None:
        """Fill a session's free window slots from the backlog."""
        backlog = self.backlog
        while backlog and session.usable and session.room:
            entry = backlog.popleft()
            if time.monotonic() > entry.deadline and entry.attempts == 0:
                self._final(entry, Status.EXPIRED, "EXPIRED", "time_to_live passed while queued")
                continue
            self._send_on(session, entry)

    def _schedule(self, entry: Entry, delay: float) -> None:
        self.scheduled.add(entry)

        def fire() -> None:
            self.scheduled.discard(entry)
            self.submit(entry)

        self.greenlets.add(gevent.spawn_later(max(0.0, delay), fire))

    def sweep_backlog(self, hand_back: bool = False) -> None:
        """While no session can take them: expire queued messages whose time has passed, and
        with `hand_back` give the rest back (FAILED NO_SESSION, retryable) so a gateway can
        route them to its fallback. One sent before its connection died may then arrive twice
        (at-least-once); its description says so."""
        now = time.monotonic()
        keep: deque[Entry] = deque()
        for entry in self.backlog:
            if now > entry.deadline:
                self._final(entry, Status.EXPIRED, "EXPIRED", "time_to_live passed while queued")
            elif hand_back:
                self._final(entry, Status.FAILED, "NO_SESSION",
                            "no CCS session could take it" if entry.attempts == 0 else
                            "sent once, then its connection died and no session came back: "
                            "CCS may have it", retryable=True)
            else:
                keep.append(entry)
        self.backlog = keep

    def check_acks(self, now: float, ack_timeout: float) -> None:
        """A session whose oldest message has waited `ack_timeout` for an answer is broken
        (the server lost it, or sends what we cannot read): close it so its messages go out
        again on a fresh connection."""
        for session in list(self.sessions):
            oldest = session.oldest()
            if oldest is not None and now - oldest.sent_at > ack_timeout and not session.closed:
                self.counters["ack_timeouts"] += 1
                reason = f"no answer to message {oldest.message_id} in {ack_timeout:g} s"
                log.warning("session %s: %s: closing it", session.id, reason)
                session.abort(reason)

    # outcomes --------------------------------------------------------------------------------

    def _final(self, entry: Entry, status: Status, error: str | None, description: str | None,
               retryable: bool = False, canonical_id: str | None = None) -> None:
        key = {Status.OK: "acked", Status.FAILED: "failed", Status.EXPIRED: "expired",
               Status.UNKNOWN: "unknown"}[status]
        if status is not Status.OK:
            self.counters[key] += 1
        self.active.pop(entry.message_id, None)
        entry.result.resolve(Outcome(status=status, via=VIA, to=entry.to,
                                     message_id=entry.message_id, error=error,
                                     description=description, retryable=retryable,
                                     canonical_id=canonical_id, attempts=entry.attempts))

    def _token_event(self, kind: TokenEventKind, token: str, reason: str | None,
                     message_id: str | None, new_token: str | None = None) -> None:
        events = self._token_events
        if events:
            events.emit(TokenEvent(kind, VIA, token, new_token, reason, message_id))

    # what sessions tell the pool (SessionListener) ---------------------------------------------

    def session_ready(self, session: Session[Entry]) -> None:
        self._pump(session)
        self._ready_changed()

    def session_closed(self, session: Session[Entry], pending: list[Entry]) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
        give_back = self._leases.pop(session, None)
        if give_back is not None:
            give_back()
        if session.auth_failed:
            self.counters["auth_failures"] += 1
        now = time.monotonic()
        for entry in pending:
            # At-least-once: CCS may have taken these before the connection died.
            self.counters["resent_after_loss"] += 1
            decision = self.policy.after_transport_loss(entry.attempts, entry.accepted_at, now,
                                                        None, self._rand.random())
            if self._stopping or now > entry.deadline or not decision.retry:
                self._final(entry, Status.UNKNOWN, "CONNECTION_LOST",
                            f"sent, connection lost before an answer ({session.close_reason})")
            else:
                self.backlog.appendleft(entry)
        for s in self.sessions:
            if s.usable:
                self._pump(s)
        self._ready_changed()

    def session_gcm(self, session: Session[Entry], ev: GcmReceived) -> None:
        msg = protocol.classify(ev.json)
        if isinstance(msg, protocol.Ack):
            entry = session.answer(msg.message_id)
            if entry is None:
                self._unexpected(session, "ack", msg.message_id)
                return
            self.counters["acked"] += 1
            if msg.canonical_id:
                self._token_event(TokenEventKind.CANONICAL, entry.to, "canonical registration_id",
                                  entry.message_id, msg.canonical_id)
            if len(self.throttle):
                self.throttle.clear(entry.to)
            self._final(entry, Status.OK, None, None, canonical_id=msg.canonical_id)
            self._pump(session)
        elif isinstance(msg, protocol.Nack):
            entry = session.answer(msg.message_id)
            if entry is None:
                self._unexpected(session, "nack", msg.message_id)
                return
            self.counters["nacked"] += 1
            if msg.error == protocol.DRAINING:
                self._drain(session)
            self._after_failure(entry, msg.error, msg.description, classify_nack(msg.error))
            self._pump(session)
        elif isinstance(msg, protocol.Control):
            if msg.draining:
                self._drain(session)
            else:
                log.info("session %s: control %s ignored", session.id, msg.control_type)
        elif isinstance(msg, protocol.Receipt):
            self.counters["receipts"] += 1
            self._deliver(session, msg, self.receipt_handler)
        elif isinstance(msg, protocol.Upstream):
            self.counters["upstream"] += 1
            self._deliver(session, msg, self.upstream_handler)
        else:
            log.warning("session %s: %s", session.id, msg.reason)

    def _unexpected(self, session: Session[Entry], kind: str, message_id: str) -> None:
        self.counters["unexpected_acks"] += 1
        log.warning("session %s: %s for a message_id not in flight: %r", session.id, kind,
                    message_id[:100])

    def session_stanza_error(self, session: Session[Entry], ev: StanzaError) -> None:
        self.counters["stanza_errors"] += 1
        mid = None
        if ev.json:
            try:
                echoed = json.loads(ev.json)
                mid = echoed.get("message_id") if isinstance(echoed, dict) else None
            except (ValueError, RecursionError):  # RecursionError: nested too deeply
                pass
        entry = session.reject(mid) if isinstance(mid, str) else None
        if entry is None:
            log.warning("session %s: stanza error %s %s: %s", session.id, ev.code,
                        ev.condition, ev.text)
            return
        code = ev.condition or ev.code or "stanza-error"
        self._after_failure(entry, code, ev.text,
                            classify_stanza_error(ev.code, ev.condition, ev.text))
        self._pump(session)

    def _after_failure(self, entry: Entry, code: str, description: str | None, cls: Any) -> None:
        now = time.monotonic()
        if cls.token_event is not None:
            self._token_event(cls.token_event, entry.to, code, entry.message_id)
        if cls.action is NackAction.FINAL:
            self._final(entry, Status.FAILED, code, description, retryable=False)
            return
        if cls.action is NackAction.THROTTLE_TARGET:
            until = self.throttle.throttle(entry.to, now, self._rand.random())
            if until > entry.deadline:
                self._final(entry, Status.EXPIRED, code, description, retryable=True)
            else:
                self.counters["retried"] += 1
                self._schedule(entry, until - now)
            return
        decision = self.policy.after_nack(code, entry.attempts, entry.accepted_at, now, None,
                                          self._rand.random())
        if not decision.retry or now + decision.delay > entry.deadline:
            status = decision.final_status or Status.EXPIRED
            self._final(entry, status, code, description, retryable=True)
            return
        self.counters["retried"] += 1
        if decision.delay <= 0:
            self.submit(entry)
        else:
            self._schedule(entry, decision.delay)

    def _drain(self, session: Session[Entry]) -> None:
        if not session.draining:
            self.counters["drains"] += 1
            log.info("session %s draining: new messages go to other sessions", session.id)
            session.mark_draining()
            self._ready_changed()

    def drain(self, session_id: int | None = None) -> int:
        """Operator drain: stop using a session (or all), replacing it; returns how many."""
        n = 0
        for s in list(self.sessions):
            if s.usable and (session_id is None or s.id == session_id):
                self._drain(s)
                gevent.spawn_later(self.config.drain_grace, s.close, "drained by operator")
                n += 1
        return n

    # upstream and receipts -------------------------------------------------------------------

    def _deliver(self, session: Session[Entry], msg: protocol.Upstream | protocol.Receipt,
                 handler: Callable[[Any], Any] | None) -> None:
        key = (msg.sender, msg.message_id)
        if key in self._seen:
            # Already handled and acked once: CCS re-sent it (our ack was lost or late).
            self.counters["duplicates_dropped"] += 1
            session.send_ack(protocol.ack_json(msg))
            return
        if handler is None:
            # Nobody can store it: leave it un-acked so CCS re-delivers it to one who can.
            return
        self.handlers.spawn(self._handle, session, msg, handler)

    def _handle(self, session: Session[Entry], msg: protocol.Upstream | protocol.Receipt,
                handler: Callable[[Any], Any]) -> None:
        try:
            handler(msg)
        except Exception:
            log.exception("handler failed for %s from %s: not acked, CCS will re-deliver",
                          msg.message_id, msg.sender)
            return
        self._seen[(msg.sender, msg.message_id)] = None
        if len(self._seen) > SEEN_UPSTREAM_MAX:
            self._seen.popitem(last=False)
        if not session.send_ack(protocol.ack_json(msg)):
            log.info("session closed before ack of %s: expect a re-delivery", msg.message_id)
