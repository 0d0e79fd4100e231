"""ccs.backoff: the one exponential backoff every retry and reconnect uses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccs.backoff import added_jitter, equal_jitter, exponential

attempts = st.integers(min_value=-5, max_value=10**5)
delays = st.floats(min_value=0.001, max_value=1e6)
rands = st.floats(min_value=0.0, max_value=1.0)


def test_exponential_doubles_from_initial_up_to_the_cap() -> None:
    assert [exponential(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert [exponential(n, 0.5, 100.0, factor=3.0) for n in (1, 2, 3)] == [0.5, 1.5, 4.5]
    assert exponential(0, 2.0, 10.0) == exponential(-3, 2.0, 10.0) == 2.0  # first attempt
    assert exponential(10**6, 1.0, 7.0) == 7.0  # no OverflowError
    assert exponential(10**6, 1.0, 7.0, factor=1.5) == 7.0


@given(attempts, delays, delays, st.floats(min_value=1.0, max_value=10.0))
def test_exponential_stays_within_initial_and_cap_and_never_falls(n, initial, cap, factor):
    first, now, after = (exponential(k, initial, cap, factor) for k in (1, n, n + 1))
    assert now <= cap
    assert now >= min(initial, cap)
    assert first <= now <= after  # monotone: a later attempt never waits less


@given(delays, rands, st.floats(min_value=0.0, max_value=1.0))
def test_added_jitter_never_below_the_delay_nor_above_its_spread(delay, rand, spread):
    got = added_jitter(delay, rand, spread)
    assert delay <= got <= delay * (1 + spread) * (1 + 1e-12)


@given(delays, rands)
def test_equal_jitter_keeps_at_least_half(delay, rand):
    assert delay / 2 <= equal_jitter(delay, rand) <= delay


def test_jitter_is_deterministic_for_a_given_rand() -> None:
    assert added_jitter(4.0, 0.5, 0.25) == 4.5
    assert added_jitter(4.0, 0.0, 0.25) == 4.0
    assert equal_jitter(4.0, 0.0) == 2.0
    assert equal_jitter(4.0, 1.0) == 4.0


@pytest.mark.parametrize("rand", [-0.1, 1.5, float("nan")])
def test_a_rand_outside_0_1_is_refused(rand: float) -> None:
    with pytest.raises(ValueError, match="rand"):
        added_jitter(1.0, rand, 0.5)
    with pytest.raises(ValueError, match="rand"):
        equal_jitter(1.0, rand)
