"""Nack classification and retry/backoff decisions for CCS (pure: the clock and randomness are
passed in).

The rules follow the GCM server reference, table 11 (docs/providers/ccs.rst).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import StrEnum

from ccs.backoff import added_jitter, exponential
from ccs.outcome import Status, TokenEventKind
from ccs.xmpp.message import MAX_TTL

JITTER = 0.5  # each delay gets up to this fraction of itself added, drawn from `rand`


class NackAction(StrEnum):
    RETRY = "retry"  # re-send after an exponential backoff with jitter
    RESEND_NOW = "resend_now"  # re-send at once on another connection
    THROTTLE_TARGET = "throttle_target"  # slow down for this token or topic only, with backoff
    FINAL = "final"  # never retry


@dataclass(frozen=True, slots=True)
class NackClass:
    action: NackAction
    retryable: bool
    token_event: TokenEventKind | None = None


_RETRY = NackClass(NackAction.RETRY, True)
_FINAL = NackClass(NackAction.FINAL, False)

NACK_CLASSES: dict[str, NackClass] = {
    "SERVICE_UNAVAILABLE": _RETRY,
    "INTERNAL_SERVER_ERROR": _RETRY,
    "CONNECTION_DRAINING": NackClass(NackAction.RESEND_NOW, True),
    "DEVICE_MESSAGE_RATE_EXCEEDED": NackClass(
        NackAction.THROTTLE_TARGET, True, TokenEventKind.RATE_LIMITED
    ),
    "TOPICS_MESSAGE_RATE_EXCEEDED": NackClass(NackAction.THROTTLE_TARGET, True),
    "INVALID_JSON": _FINAL,
    "BAD_REGISTRATION": NackClass(NackAction.FINAL, False, TokenEventKind.INVALID),
    "BAD_ACK": _FINAL,
    "DEVICE_UNREGISTERED": NackClass(NackAction.FINAL, False, TokenEventKind.UNREGISTERED),
    # Historical codes. INVALID_TTL and JSON_TYPE_ERROR are kinds of INVALID_JSON (CCS reported
    # them as "InvalidJson : INVALID_TTL : ..."): the message itself is wrong, so final.
    "INVALID_TTL": _FINAL,
    "JSON_TYPE_ERROR": _FINAL,
    # QUOTA_EXCEEDED is a sender-wide rate limit: back off and retry, like SERVICE_UNAVAILABLE.
    "QUOTA_EXCEEDED": _RETRY,
    # AUTHENTICATION_FAILED says nothing against the message; treated as unknown (retry with
    # backoff until the deadline) so a fixed key or a new session can still deliver it.
    "AUTHENTICATION_FAILED": _RETRY,
}


def classify_nack(code: str | None) -> NackClass:
    """What to do with a nacked message. Unknown or missing codes count as INTERNAL_SERVER_ERROR."""
    if not isinstance(code, str):
        return _RETRY
    found = NACK_CLASSES.get(code)
    if found is None:
        found = NACK_CLASSES.get(code.strip().upper(), _RETRY)
    return found


_STANZA_CONDITIONS: dict[str, NackClass] = {
    "bad-request": _FINAL,
    "not-acceptable": _FINAL,  # 406: acks for messages not sent over this connection
    "jid-malformed": _FINAL,
    "not-allowed": _FINAL,  # 405
    "forbidden": _FINAL,  # 403
    "not-authorized": _FINAL,  # 401
    "feature-not-implemented": _FINAL,
    "service-unavailable": _RETRY,
    "internal-server-error": _RETRY,
    "remote-server-timeout": _RETRY,
    "resource-constraint": _RETRY,
}
_STANZA_CODES: dict[int, NackClass] = {
    400: _FINAL,
    500: _RETRY,
    502: _RETRY,
    503: _RETRY,
    504: _RETRY,
}


def classify_stanza_error(
    code: str | int | None, condition: str | None, text: str | None
) -> NackClass:
    """Classify a ``<message type="error">`` reply to a downstream message.

    CCS answers JSON it cannot take (e.g. a missing message_id) with 400 bad-request and a text
    starting "InvalidJson": final. 5xx and service-unavailable are transient: retry. A nack code
    named in the text wins over the code; anything unrecognised is retried, like unknown nacks.
    """
    if text:
        head = text.lstrip()
        if head[:11].lower() == "invalidjson":
            return _FINAL
        for word in head.replace(":", " ").split():
            if word in NACK_CLASSES:
                return NACK_CLASSES[word]
    if condition:
        found = _STANZA_CONDITIONS.get(condition.strip().lower())
        if found is not None:
            return found
    if code is not None:
        try:
            number = int(code)
        except (TypeError, ValueError):
            number = None
        if number is not None:
            found = _STANZA_CODES.get(number)
            if found is not None:
                return found
            if 400 <= number < 500:
                return _FINAL
    return _RETRY


def backoff_delay(
    attempt: int, rand: float, *, initial: float = 1.0, factor: float = 2.0, cap: float = 300.0
) -> float:
    """Delay before re-send number `attempt` (1 = the first retry): exponential with jitter.

    base = initial * factor**(attempt-1); delay = min(cap, base * (1 + JITTER * rand)). The jitter
    is additive, so a delay never falls below its base (the reference: wait 1 s, then at least 2,
    then 4...), and each message draws its own `rand` in [0, 1) to spread the retries.
    """
    return min(cap, added_jitter(exponential(attempt, initial, cap, factor), rand, JITTER))


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay: float  # seconds from `now` before re-sending; 0 = at once
    final_status: Status | None  # set when retry is False
    reason: str | None  # the nack code (or what happened) behind the decision


class RetryPolicy:
    """Decides, per nack or lost connection, whether and when a message is sent again."""

    def __init__(
        self,
        initial: float = 1.0,
        factor: float = 2.0,
        cap: float = 300.0,
        max_retry_seconds: float = 3600.0,
    ) -> None:
        if initial <= 0 or factor < 1 or cap < initial or max_retry_seconds < 0:
            raise ValueError("need initial > 0, factor >= 1, cap >= initial, max_retry >= 0")
        self.initial = initial
        self.factor = factor
        self.cap = cap
        self.max_retry_seconds = max_retry_seconds

    def deadline(self, accepted_at: float, time_to_live: int | None) -> float:
        """The last moment a re-send may start: accepted_at + min(ttl, max_retry_seconds)."""
        ttl = MAX_TTL if time_to_live is None else time_to_live
        return accepted_at + min(ttl, self.max_retry_seconds)

    def _later(
        self, delay: float, accepted_at: float, now: float, ttl: int | None, reason: str | None
    ) -> RetryDecision:
        if now + delay > self.deadline(accepted_at, ttl):
            return RetryDecision(False, 0.0, Status.EXPIRED, reason)
        return RetryDecision(True, delay, None, reason)

    def after_nack(
        self,
        code: str | None,
        attempt: int,
        accepted_at: float,
        now: float,
        time_to_live: int | None,
        rand: float,
    ) -> RetryDecision:
        """Decide after a nack; `attempt` counts the sends so far (1 after the first nack).

        For THROTTLE_TARGET the caller also feeds TargetThrottle and sends no earlier than
        max(now + delay, its ready_at): this decision covers the message, that one the target.
        """
        action = classify_nack(code).action
        if action is NackAction.FINAL:
            return RetryDecision(False, 0.0, Status.FAILED, code)
        if action is NackAction.RESEND_NOW:
            return self._later(0.0, accepted_at, now, time_to_live, code)
        delay = backoff_delay(
            attempt, rand, initial=self.initial, factor=self.factor, cap=self.cap
        )
        return self._later(delay, accepted_at, now, time_to_live, code)

    def after_transport_loss(
        self,
        attempt: int,
        accepted_at: float,
        now: float,
        time_to_live: int | None,
        rand: float,
    ) -> RetryDecision:
        """A connection closed with the message pending: re-send at once on a live session."""
        return self._later(0.0, accepted_at, now, time_to_live, "CONNECTION_LOST")


class TargetThrottle:
    """Per-target (token or topic) backoff after *_RATE_EXCEEDED; bounded memory (prunes expired).

    Each repeat while a target is remembered doubles its pause. A target is forgotten (its next
    pause starts again at `initial`) once it has been quiet for as long as its last pause.
    """

    def __init__(
        self,
        initial: float = 1.0,
        factor: float = 2.0,
        cap: float = 600.0,
        max_entries: int = 100_000,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.initial = initial
        self.factor = factor
        self.cap = cap
        self.max_entries = max_entries
        # target -> (level, ready_at, forget_at)
        self._entries: dict[str, tuple[int, float, float]] = {}
        self._heap: list[tuple[float, str]] = []  # (forget_at, target); stale items skipped

    def __len__(self) -> int:
        return len(self._entries)

    def throttle(self, target: str, now: float, rand: float) -> float:
        """Note a rate-exceeded answer for `target`; return when it may be sent to again."""
        self.prune(now)
        entry = self._entries.get(target)
        level = entry[0] + 1 if entry is not None else 1
        delay = backoff_delay(level, rand, initial=self.initial, factor=self.factor, cap=self.cap)
        ready = now + delay
        if entry is not None and entry[1] > ready:
            ready = entry[1]  # never shorten a pause already promised
        forget = ready + delay
        self._entries[target] = (level, ready, forget)
        heapq.heappush(self._heap, (forget, target))
        if len(self._entries) > self.max_entries:
            self._evict(keep=target)
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [(e[2], t) for t, e in self._entries.items()]
            heapq.heapify(self._heap)
        return ready

    def ready_at(self, target: str, now: float) -> float | None:
        """When `target` may be sent to again; None when it is not throttled."""
        entry = self._entries.get(target)
        if entry is None or now >= entry[1]:
            return None
        return entry[1]

    def clear(self, target: str) -> None:
        """Forget `target` (after a success)."""
        self._entries.pop(target, None)

    def prune(self, now: float) -> None:
        """Drop targets quiet long enough to be forgotten."""
        heap, entries = self._heap, self._entries
        while heap and heap[0][0] <= now:
            forget, target = heapq.heappop(heap)
            entry = entries.get(target)
            if entry is not None and entry[2] == forget:
                del entries[target]

    def _evict(self, keep: str) -> None:
        """Over max_entries: drop the entries closest to being forgotten, except `keep`."""
        heap, entries = self._heap, self._entries
        kept: list[tuple[float, str]] = []
        while len(entries) > self.max_entries and heap:
            item = heapq.heappop(heap)
            entry = entries.get(item[1])
            if entry is None or entry[2] != item[0]:
                continue
            if item[1] == keep:
                kept.append(item)
            else:
                del entries[item[1]]
        for item in kept:
            heapq.heappush(heap, item)
