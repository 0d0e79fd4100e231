"""The binary client in bursts against a hostile gateway (tests/hostile_binary.py): every
notification's outcome is counted against what the server processed."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from ccs.outcome import Status, TokenEventKind
from http_fallback.apns.auth import certificate_context
from http_fallback.apns.binary.cache import SentCache
from http_fallback.apns.binary.client import BinaryClient
from http_fallback.apns.model import Notification
from tests.greenlet_errors import no_greenlet_errors  # noqa: F401 - autouse fixture
from tests.helpers import wait_until
from tests.hostile_binary import HostileBinary


def tok(i: int) -> str:
    return f"{i:064x}"


def context(pki: Any) -> Any:
    return certificate_context(ca_file=pki.ca_file, cert_file=pki.client_cert_file,
                               key_file=pki.client_key_file)


def client(pki: Any, server: HostileBinary, **kw: Any) -> BinaryClient:
    kw.setdefault("reconnect_base", 0.01)
    c = BinaryClient("127.0.0.1", server.port, context(pki), **kw)
    c.start()
    return c


def note(i: int) -> Notification:
    return Notification(device=tok(i), alert=f"notification {i}".ljust(40, "."))


def test_cache_resolves_in_order_and_never_drops_the_unresolved():
    cache = SentCache(size=2)
    for i in range(1, 4):
        cache.add(i, f"n{i}", end=100 * i)  # each 100 bytes
    assert cache.pending == 3 and len(cache) == 3 and not cache.has_room()  # nothing pushed out
    assert cache.settle(reached=250, now=10.0, quiet=1.0) == []  # n1, n2 arrived just now
    assert cache.settle(reached=None, now=10.5, quiet=1.0) == []
    assert cache.settle(reached=300, now=11.0, quiet=1.0) == ["n1", "n2"]  # n3 arrived at 11
    assert len(cache) == 2 and cache.pending == 1  # n1 resolved and over the size: gone
    assert cache.settle(reached=None, now=11.9, quiet=1.0) == []
    cache.add(4, "n4", end=400)
    res = cache.on_error(3)
    assert res.failed == "n3" and res.resend == ["n4"] and res.accepted == [] and not res.late
    assert len(cache) == 0 and cache.pending == 0
    cache = SentCache(size=10)  # room to keep what is resolved
    for i in range(5, 9):
        cache.add(i, f"n{i}", end=100 * i)
    cache.settle(reached=600, now=1.0, quiet=1.0)
    assert cache.settle(reached=600, now=2.0, quiet=1.0) == ["n5", "n6"]
    res = cache.on_error(6)  # n6 was resolved by its quiet period: the error came late
    assert res.late == "n6" and res.failed is None and res.resend == ["n7", "n8"]
    assert res.resend_resolved == 0
    cache.add(9, "n9", end=100)
    cache.add(10, "n10", end=200)
    res = cache.on_error(9, shutdown=True)  # 9 is the last that went through
    assert res.accepted == ["n9"] and res.resend == ["n10"] and res.failed is None
    assert cache.grow() == 20


def test_thousand_in_bursts_with_invalid_tokens_and_shutdowns(pki):
    """The issue's run: 500 command-2 then 500 command-1 notifications; every 50th token is
    invalid (error 8, close); status 10 after every 250 accepted."""
    bad = {tok(i) for i in range(50, 1001, 50)}
    with HostileBinary(pki, reject=dict.fromkeys(bad, 8), shutdown_every=250) as server:
        c = client(pki, server, command=2)
        events = []
        c.token_events.add(events.append)
        try:
            results = [c.send(note(i)) for i in range(1, 501)]
            c.command = 1
            results += [c.send(note(i)) for i in range(501, 1001)]
            outs = [r.get(30) for r in results]
        finally:
            c.stop(timeout=1)
    good = [tok(i) for i in range(1, 1001) if tok(i) not in bad]
    assert Counter(server.accepted()) == Counter(good)  # each good one accepted exactly once
    by_status = Counter(o.status for o in outs)
    assert by_status == {Status.OK: 980, Status.FAILED: 20}, by_status
    assert {o.to for o in outs if o.status is Status.FAILED} == bad
    assert {o.error for o in outs if o.status is Status.FAILED} == {"InvalidToken"}
    assert sorted(e.token for e in events if e.kind is TokenEventKind.INVALID) == sorted(bad)
    commands = {s.token: s.command for s in server.seen if s.status == 0}
    assert {commands[tok(i)] for i in range(1, 50)} == {2}
    assert {commands[tok(i)] for i in range(951, 1000)} == {1}
    assert sum(1 for a in server.answers if a[1] == 10) == 3
    assert c.counts["late_errors"] == 0 and c.counts["unknown"] == 0


def test_a_burst_larger_than_the_cache_waits_for_room_and_loses_nothing(pki):
    """No error at all: 300 in one burst through a 100-entry cache, all `ok`."""
    with HostileBinary(pki) as server:
        c = client(pki, server, cache_length=100, cache_wait=5.0, quiet_period=0.2)
        try:
            outs = [r.get(30) for r in [c.send(note(i)) for i in range(300)]]
        finally:
            c.stop(timeout=1)
    assert all(o.ok and not o.extra["confirmed"] for o in outs)
    assert Counter(server.accepted()) == Counter(tok(i) for i in range(300))
    assert c.counts["cache_waits"] >= 2 and c.cache.size == 100  # it waited; never grew


def test_the_cache_grows_when_waiting_is_not_enough(pki):
    grew = []
    with HostileBinary(pki) as server:
        c = client(pki, server, cache_length=10, cache_wait=0.0, quiet_period=0.5)
        c.cache_grew.add(grew.append)
        try:
            outs = [r.get(30) for r in [c.send(note(i)) for i in range(100)]]
        finally:
            c.stop(timeout=1)
    assert all(o.ok for o in outs) and len(server.accepted()) == 100
    assert grew and grew[0] == 20 and c.cache.size >= 20


def test_silent_drop_leaves_what_it_swallowed_unknown_and_later_ones_go_out(pki):
    with HostileBinary(pki, drop_connection=1, drop_after=20) as server:
        c = client(pki, server, quiet_period=0.2)
        try:
            first = [r.get(10) for r in [c.send(note(i)) for i in range(20)]]
            dropped = [r.get(10) for r in [c.send(note(i)) for i in range(20, 30)]]
            later = [r.get(10) for r in [c.send(note(i)) for i in range(30, 35)]]
        finally:
            c.stop(timeout=1)
    assert all(o.ok and not o.extra["confirmed"] for o in first)
    assert {(o.status, o.error) for o in dropped} == {(Status.UNKNOWN, "ConnectionLost")}
    assert all(o.ok for o in later)
    assert server.accepted() == [tok(i) for i in [*range(20), *range(30, 35)]]


def test_slow_reads_delay_the_quiet_period_so_a_deep_error_is_still_exact(pki):
    """The gateway reads 1 KiB every 10 ms through a 4 KiB window, so most of what we wrote
    waits in our own kernel: its quiet period must not start until the gateway's side has it.
    (#1000 is read about a second after it was written; at most ~24 KiB, 0.25 s of reading,
    sit on the gateway's side unread.)"""
    n, bad = 1200, 1000
    with HostileBinary(pki, reject={tok(bad): 8}, slow_read=(1024, 0.01)) as server:
        c = client(pki, server, quiet_period=0.6)
        try:
            outs = [r.get(30) for r in [c.send(note(i)) for i in range(n)]]
        finally:
            c.stop(timeout=1)
    assert c.counts["late_errors"] == 0  # nothing was called ok before the gateway judged it
    assert all(o.ok for o in outs[:bad])
    assert outs[bad].status is Status.FAILED and outs[bad].error == "InvalidToken"
    assert all(o.ok for o in outs[bad + 1:])
    assert Counter(server.accepted()) == Counter(tok(i) for i in range(n) if i != bad)


def test_an_error_after_the_quiet_period_still_resends_what_followed(pki):
    """Legal but unkind: the error response comes after our quiet period. The named one was
    already reported ok (counted as a late error), but what followed it goes out again."""
    with HostileBinary(pki, reject={tok(5): 8}, error_delay=1.5) as server:
        c = client(pki, server, quiet_period=0.2)
        events = []
        c.token_events.add(events.append)
        try:
            outs = [r.get(10) for r in [c.send(note(i)) for i in range(10)]]
            wait_until(lambda: c.counts["late_errors"] == 1, what="the late error")
            wait_until(lambda: len(server.accepted()) == 9, what="the re-sent ones")
        finally:
            c.stop(timeout=1)
    assert all(o.ok for o in outs)
    assert Counter(server.accepted()) == Counter(tok(i) for i in range(10) if i != 5)
    assert [e.token for e in events] == [tok(5)]


@pytest.mark.parametrize("abrupt", [False, True])
def test_everything_at_once(pki, abrupt):
    """Rejections, shutdowns, slow reads, a silent drop and a small cache together."""
    bad = {tok(i) for i in range(7, 400, 37)}
    with HostileBinary(pki, reject=dict.fromkeys(bad, 8), shutdown_every=90,
                       slow_read=(4096, 0.002), drop_connection=3, drop_after=15,
                       abrupt=abrupt) as server:
        c = client(pki, server, cache_length=30, cache_wait=0.05, quiet_period=1.0)
        try:
            outs = [r.get(60) for r in [c.send(note(i)) for i in range(400)]]
        finally:
            c.stop(timeout=1)
    accepted = Counter(server.accepted())
    assert max(accepted.values()) == 1  # nothing accepted twice
    dropped = 3
    for i, o in enumerate(outs):
        t = tok(i)
        if o.status is Status.OK:
            assert accepted[t] == 1, (i, o)
        elif o.status is Status.FAILED:
            assert t in bad and o.error == "InvalidToken" and not accepted[t]
        else:  # only around the silent drop: taken or not, no answer came
            assert o.status is Status.UNKNOWN and o.error == "ConnectionLost", (i, o)
            assert {s.connection for s in server.seen if s.token == t} <= {dropped}
    unknown = [o for o in outs if o.status is Status.UNKNOWN]
    assert 0 < len(unknown) <= c.cache.size  # at most a cache of them, written on that one
    assert all(accepted[tok(i)] or outs[i].status is Status.UNKNOWN
               for i in range(400) if tok(i) not in bad)
