"""Nack classification, backoff and retry decisions: tables for every code, plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccs.outcome import Status, TokenEventKind
from ccs.xmpp.message import MAX_TTL
from ccs.xmpp.retry import (
    JITTER,
    NackAction,
    NackClass,
    RetryDecision,
    RetryPolicy,
    TargetThrottle,
    backoff_delay,
    classify_nack,
    classify_stanza_error,
)

A = NackAction
NACKS = [
    ("SERVICE_UNAVAILABLE", A.RETRY, True, None),
    ("INTERNAL_SERVER_ERROR", A.RETRY, True, None),
    ("CONNECTION_DRAINING", A.RESEND_NOW, True, None),
    ("DEVICE_MESSAGE_RATE_EXCEEDED", A.THROTTLE_TARGET, True, TokenEventKind.RATE_LIMITED),
    ("TOPICS_MESSAGE_RATE_EXCEEDED", A.THROTTLE_TARGET, True, None),
    ("INVALID_JSON", A.FINAL, False, None),
    ("BAD_REGISTRATION", A.FINAL, False, TokenEventKind.INVALID),
    ("BAD_ACK", A.FINAL, False, None),
    ("DEVICE_UNREGISTERED", A.FINAL, False, TokenEventKind.UNREGISTERED),
    ("INVALID_TTL", A.FINAL, False, None),
    ("JSON_TYPE_ERROR", A.FINAL, False, None),
    ("QUOTA_EXCEEDED", A.RETRY, True, None),
    ("AUTHENTICATION_FAILED", A.RETRY, True, None),
    ("SOMETHING_NEW", A.RETRY, True, None),
    ("", A.RETRY, True, None),
    (None, A.RETRY, True, None),
    (" device_unregistered ", A.FINAL, False, TokenEventKind.UNREGISTERED),
]


@pytest.mark.parametrize(("code", "action", "retryable", "event"), NACKS)
def test_classify_nack(code, action, retryable, event):
    assert classify_nack(code) == NackClass(action, retryable, event)


def test_classify_nack_tolerates_non_string_codes():
    assert classify_nack(503).action is A.RETRY  # type: ignore[arg-type]


STANZA = [
    (400, "bad-request", "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id",
     A.FINAL),
    ("400", None, None, A.FINAL),
    (None, None, "InvalidJson : INVALID_TTL : bad ttl", A.FINAL),
    (None, "bad-request", None, A.FINAL),
    (406, "not-acceptable", "Received acks for messages not sent over this connection", A.FINAL),
    (503, "service-unavailable", None, A.RETRY),
    (None, "service-unavailable", None, A.RETRY),
    ("503", None, None, A.RETRY),
    (500, "internal-server-error", None, A.RETRY),
    (None, "resource-constraint", None, A.RETRY),
    (None, None, "SERVICE_UNAVAILABLE", A.RETRY),
    (None, None, "error: CONNECTION_DRAINING", A.RESEND_NOW),
    (None, None, "DEVICE_UNREGISTERED : gone", A.FINAL),
    (403, "forbidden", None, A.FINAL),
    (None, "not-authorized", None, A.FINAL),
    (None, "not-allowed", None, A.FINAL),
    (404, None, None, A.FINAL),
    (None, "undefined-condition", None, A.RETRY),
    ("abc", None, None, A.RETRY),
    (None, None, None, A.RETRY),
]


@pytest.mark.parametrize(("code", "condition", "text", "action"), STANZA)
def test_classify_stanza_error(code, condition, text, action):
    assert classify_stanza_error(code, condition, text).action is action


def test_backoff_first_delay_is_initial_then_doubles():
    assert backoff_delay(1, 0.0) == 1.0
    assert [backoff_delay(n, 0.0) for n in range(1, 6)] == [1, 2, 4, 8, 16]
    assert backoff_delay(1, 0.999) == pytest.approx(1 + JITTER * 0.999)
    assert backoff_delay(30, 0.5) == 300.0
    assert backoff_delay(10**6, 0.5, cap=7.0) == 7.0
    assert backoff_delay(0, 0.0) == 1.0  # attempts below 1 count as the first
    assert backoff_delay(3, 0.0, initial=0.5, factor=3.0) == 4.5
    with pytest.raises(ValueError):
        backoff_delay(1, 1.5)
    with pytest.raises(ValueError):
        backoff_delay(1, -0.1)


rands = st.floats(0.0, 1.0, exclude_max=True)
attempts = st.integers(1, 10_000)


@settings(max_examples=300)
@given(attempts, rands, st.floats(0.01, 10), st.floats(1.0, 4.0), st.floats(10, 1000))
def test_backoff_monotone_and_bounded(n, rand, initial, factor, cap):
    d1 = backoff_delay(n, rand, initial=initial, factor=factor, cap=cap)
    d2 = backoff_delay(n + 1, rand, initial=initial, factor=factor, cap=cap)
    assert d1 <= d2 <= cap
    try:
        base = initial * factor ** (n - 1)
    except OverflowError:
        base = float("inf")
    assert min(base, cap) <= d1 <= min(cap, base * (1 + JITTER))


def test_policy_final_codes_fail():
    p = RetryPolicy()
    for code in ("INVALID_JSON", "BAD_REGISTRATION", "BAD_ACK", "DEVICE_UNREGISTERED"):
        assert p.after_nack(code, 1, 0.0, 0.0, None, 0.3) == RetryDecision(
            False, 0.0, Status.FAILED, code
        )


def test_policy_retry_backs_off():
    p = RetryPolicy()
    d = p.after_nack("SERVICE_UNAVAILABLE", 1, 100.0, 100.5, None, 0.0)
    assert d == RetryDecision(True, 1.0, None, "SERVICE_UNAVAILABLE")
    d = p.after_nack("DEVICE_MESSAGE_RATE_EXCEEDED", 3, 100.0, 110.0, None, 0.0)
    assert d.retry and d.delay == 4.0


def test_policy_drain_resends_at_once():
    d = RetryPolicy().after_nack("CONNECTION_DRAINING", 5, 0.0, 10.0, 60, 0.9)
    assert d == RetryDecision(True, 0.0, None, "CONNECTION_DRAINING")


def test_policy_expires_at_ttl_and_max_retry_seconds():
    p = RetryPolicy(max_retry_seconds=3600)
    # ttl 10: a 1 s backoff from t=9.5 would end past 10 -> expired
    d = p.after_nack("SERVICE_UNAVAILABLE", 1, 0.0, 9.5, 10, 0.0)
    assert d == RetryDecision(False, 0.0, Status.EXPIRED, "SERVICE_UNAVAILABLE")
    assert p.after_nack("SERVICE_UNAVAILABLE", 1, 0.0, 9.0, 10, 0.0).retry  # lands exactly at 10
    # no ttl: the default is four weeks, but max_retry_seconds bounds it
    assert not p.after_nack("INTERNAL_SERVER_ERROR", 1, 0.0, 3599.5, None, 0.0).retry
    assert p.deadline(5.0, None) == 3605.0
    assert RetryPolicy(max_retry_seconds=10**9).deadline(0.0, None) == MAX_TTL
    # ttl 0: now or never
    assert not p.after_nack("CONNECTION_DRAINING", 1, 0.0, 0.001, 0, 0.0).retry
    assert p.after_nack("CONNECTION_DRAINING", 1, 0.0, 0.0, 0, 0.0).retry


def test_transport_loss():
    p = RetryPolicy()
    assert p.after_transport_loss(2, 0.0, 5.0, 60, 0.5) == RetryDecision(
        True, 0.0, None, "CONNECTION_LOST"
    )
    d = p.after_transport_loss(2, 0.0, 61.0, 60, 0.5)
    assert d.final_status is Status.EXPIRED and not d.retry


def test_policy_rejects_bad_settings():
    for kwargs in ({"initial": 0}, {"factor": 0.5}, {"cap": 0.5}, {"max_retry_seconds": -1}):
        with pytest.raises(ValueError):
            RetryPolicy(**kwargs)


codes = st.sampled_from([c for c, *_ in NACKS])


@settings(max_examples=500)
@given(codes, attempts, st.floats(0, 1e6), st.floats(0, 1e5),
       st.none() | st.integers(0, MAX_TTL), rands, st.floats(0, 1e5))
def test_decisions_never_retry_past_the_deadline(code, n, accepted, elapsed, ttl, rand, max_s):
    p = RetryPolicy(max_retry_seconds=max_s)
    now = accepted + elapsed
    deadline = accepted + min(MAX_TTL if ttl is None else ttl, max_s)
    for d in (p.after_nack(code, n, accepted, now, ttl, rand),
              p.after_transport_loss(n, accepted, now, ttl, rand)):
        if d.retry:
            assert d.final_status is None
            assert now + d.delay <= deadline
            assert d.delay >= 0
        else:
            assert d.final_status in (Status.FAILED, Status.EXPIRED)
    final = classify_nack(code).action is A.FINAL
    assert (p.after_nack(code, n, accepted, now, ttl, rand).final_status is Status.FAILED) == final


def test_throttle_grows_on_repeats_and_clears():
    t = TargetThrottle(initial=1.0, factor=2.0, cap=600.0)
    assert t.ready_at("tok", 0.0) is None
    assert t.throttle("tok", 0.0, 0.0) == 1.0
    assert t.ready_at("tok", 0.5) == 1.0
    assert t.ready_at("tok", 1.0) is None  # pause over
    assert t.throttle("tok", 1.0, 0.0) == 3.0  # remembered: pause doubles to 2
    assert t.throttle("tok", 1.5, 0.0) == 5.5  # and to 4
    assert t.ready_at("other", 1.5) is None
    assert len(t) == 1
    t.clear("tok")
    assert len(t) == 0 and t.ready_at("tok", 2.0) is None
    assert t.throttle("tok", 2.0, 0.0) == 3.0  # starts again at initial
    t.clear("never-seen")


def test_throttle_never_shortens_a_promised_pause():
    t = TargetThrottle(initial=1.0, factor=1.0, cap=600.0)
    assert t.throttle("x", 0.0, 0.0) == 1.0
    assert t.throttle("x", 0.0, 0.0) == 1.0
    t2 = TargetThrottle(initial=1.0, factor=2.0, cap=4.0)
    ready = [t2.throttle("y", 0.0, 0.0) for _ in range(5)]
    assert ready == sorted(ready) and ready[-1] == 4.0


def test_throttle_forgets_quiet_targets():
    t = TargetThrottle(initial=1.0, factor=2.0)
    t.throttle("a", 0.0, 0.0)  # ready at 1, forgotten at 2
    t.throttle("b", 0.0, 0.0)
    t.throttle("b", 0.0, 0.0)  # ready at 2, forgotten at 4
    t.prune(2.5)
    assert len(t) == 1
    assert t.throttle("a", 2.5, 0.0) == 3.5  # level back to 1
    t.prune(100.0)
    assert len(t) == 0


def test_throttle_memory_is_bounded():
    t = TargetThrottle(max_entries=100)
    for i in range(10_000):
        t.throttle(f"tok{i}", float(i) * 0.001, 0.5)
        assert len(t) <= 100
    assert len(t._heap) <= 2 * 100 + 64 + 1
    with pytest.raises(ValueError):
        TargetThrottle(max_entries=0)


def test_throttle_heap_stays_bounded_under_repeats():
    t = TargetThrottle(cap=5.0)
    for i in range(5_000):
        t.throttle("hot", i * 0.01, 0.1)
        t.clear("hot") if i % 7 == 0 else None
    assert len(t) == 1
    assert len(t._heap) <= 2 * len(t) + 64 + 1


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from("abcde"), st.floats(0, 5), rands), max_size=40))
def test_throttle_properties(events):
    t = TargetThrottle(initial=1.0, factor=2.0, cap=60.0, max_entries=3)
    now = 0.0
    for target, step, rand in events:
        now += step
        ready = t.throttle(target, now, rand)
        assert now + 1.0 <= ready <= now + 60.0
        assert t.ready_at(target, now) == ready
        assert len(t) <= 3
