"""Exponential backoff, the one formula behind every retry and reconnect delay (pure).

A caller draws `rand` in [0, 1] from its own random source, so tests pass fixed values. Two
jitters are in use: `added` (a fraction of the delay on top, so a delay never falls below its
exponential base) and `equal` (half the delay fixed, half random, so reconnecting clients
spread out).
"""

from __future__ import annotations


def exponential(attempt: int, initial: float, cap: float, factor: float = 2.0) -> float:
    """initial * factor**(attempt-1), at most `cap`; an attempt below 1 counts as the first.

    Huge attempt counts give `cap` rather than an OverflowError."""
    n = max(1, int(attempt))
    try:
        return float(min(cap, initial * factor ** (n - 1)))
    except OverflowError:
        return float(cap)


def _check(rand: float) -> None:
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand must be in [0, 1], got {rand!r}")


def added_jitter(delay: float, rand: float, spread: float) -> float:
    """`delay` plus up to `spread` of itself: delay * (1 + spread * rand)."""
    _check(rand)
    return delay * (1.0 + spread * rand)


def equal_jitter(delay: float, rand: float) -> float:
    """Half of `delay` fixed, the other half random: delay * (0.5 + rand / 2)."""
    _check(rand)
    return delay * (0.5 + rand / 2)
