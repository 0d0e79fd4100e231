"""A budget shared by every gateway process: CCS allows 1000 connections per sender in all.

Each connection holds a lease, a member of one Redis sorted set scored by its expiry (Redis
server time, so process clocks do not matter). A live process refreshes its leases; those of
a process that died expire after `ttl` and count no more. The pool takes a lease before it
opens a session and gives it back when the session closes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

import gevent

log = logging.getLogger(__name__)

# KEYS[1] the lease set; ARGV: member, budget, ttl (seconds). Returns 1 when taken.
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  return 1
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000) + 1000)
return 1
"""


class Leases:
    """Leases of one budget (`key`) held by this process."""

    def __init__(self, redis: Any, key: str, budget: int, ttl: float) -> None:
        self.redis = redis
        self.key = key
        self.budget = budget
        self.ttl = ttl
        self.owner = secrets.token_hex(6)
        self.held: set[str] = set()
        self.returning: set[str] = set()  # given back, the ZREM not known to have completed
        self.refused = 0  # takes refused because the budget was spent
        self.lost = 0  # leases that expired under us (refresh came too late) and were over budget
        self._take = redis.register_script(TAKE)
        self._n = 0

    def __repr__(self) -> str:
        return f"Leases({self.key!r}, budget={self.budget}, held={len(self.held)})"

    def take(self) -> Callable[[], None] | None:
        """One lease, as the callable that gives it back; None when the budget is spent."""
        self._n += 1
        member = f"{self.owner}:{self._n}"
        try:
            taken = self._take(keys=[self.key], args=[member, self.budget, self.ttl])
        except BaseException:
            # Killed (or failed) with the take on the wire: Redis may have granted it, and
            # nobody would ever give it back. Remove it before going on.
            self._give_back(member)
            raise
        if not taken:
            self.refused += 1
            return None
        self.held.add(member)
        done = False

        def give_back() -> None:
            nonlocal done
            if not done:
                done = True
                self.held.discard(member)
                self._give_back(member)

        return give_back

    def _give_back(self, member: str) -> None:
        """Remove `member` from Redis, even when the caller dies meanwhile.

        The root cause of leases outliving a stopped client: a session gives its lease back
        from its own greenlet as it closes, and the pool's stop kills those greenlets; a kill
        landing while ZREM was on the wire left the member in Redis, held by nobody and
        refreshed by nobody, counted against the budget until its ttl ran out. Now a give-back
        that did not complete is finished by a greenlet of our own (and by refresh and close).
        """
        self.returning.add(member)
        try:
            self.redis.zrem(self.key, member)
            self.returning.discard(member)
        except Exception:
            log.warning("could not give back connection lease %s; trying again", member)
        except BaseException:  # killed with the ZREM on the wire: finish it elsewhere
            gevent.spawn(self._finish_returns)
            raise

    def _finish_returns(self) -> None:
        for member in list(self.returning):
            try:
                self.redis.zrem(self.key, member)
                self.returning.discard(member)
            except Exception:
                log.warning("could not give back connection lease %s: it expires in %ss",
                            member, self.ttl)

    def refresh(self) -> None:
        """Push every held lease's expiry forward (called by the owner's heartbeat)."""
        self._finish_returns()
        for member in list(self.held):
            if member not in self.held:
                continue  # given back while an earlier refresh was on the wire
            taken = self._take(keys=[self.key], args=[member, self.budget, self.ttl])
            if member not in self.held:
                # Given back while this refresh was on the wire: the refresh must not bring it
                # back to life (it would count against the budget until it expired).
                self.redis.zrem(self.key, member)
            elif not taken:
                self.lost += 1
                log.warning("connection lease %s expired and the budget is spent", member)

    def in_use(self) -> int:
        """Leases held by live processes, all of them (this one included)."""
        t = self.redis.time()
        return int(self.redis.zcount(self.key, t[0] + t[1] / 1e6, "+inf"))

    def close(self) -> None:
        """Give back every lease still held (and any give-back that did not complete)."""
        if self.held or self.returning:
            self.redis.zrem(self.key, *self.held, *self.returning)
            self.held.clear()
            self.returning.clear()
