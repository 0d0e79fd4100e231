"""The CCS Pool with real Sessions against the CCS emulator over TLS on loopback.

The pool is built as its owner builds it: a config and the callbacks it tells upward through
(ready_changed, token_events, the upstream and receipt handlers). No CcsClient here.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from ccs.outcome import Listeners, SendResult, Status, TokenEventKind
from ccs.xmpp.config import CcsConfig
from ccs.xmpp.emulator import CcsEmulator
from ccs.xmpp.message import build_message
from ccs.xmpp.pool import Entry, Pool
from tests.helpers import wait_until

SENDER, KEY = "4815162342", "test-server-key"


class Owner:
    """What the client gives its pool: a ready_changed callback and token event listeners."""

    def __init__(self) -> None:
        self.ready_calls: list[bool] = []
        self.pool: Pool | None = None
        self.token_events = Listeners()
        self.tokens: list[Any] = []
        self.token_events.add(self.tokens.append)

    def ready_changed(self) -> None:
        assert self.pool is not None
        self.ready_calls.append(any(s.usable for s in self.pool.sessions))


@pytest.fixture
def emu(pki):
    with CcsEmulator(sender_id=SENDER, server_key=KEY, pki=pki, drain_grace=0.05) as e:
        yield e


@pytest.fixture
def make_pool(emu):
    pools: list[Pool] = []

    def make(**overrides: Any) -> tuple[Pool, Owner]:
        options: dict[str, Any] = dict(
            sender_id=SENDER, server_key=KEY, host=emu.host, port=emu.port,
            ca_file=emu.ca_file, connections=1, retry_initial=0.02, reconnect_initial=0.02,
            reconnect_max=0.2, connect_timeout=5)
        options.update(overrides)
        config = CcsConfig(**options)
        owner = Owner()
        pool = owner.pool = Pool(config, owner.ready_changed, owner.token_events)
        pools.append(pool)
        pool.start()
        wait_until(lambda: any(s.usable for s in pool.sessions), what="a usable session")
        return pool, owner

    yield make
    for pool in pools:
        pool.stop(timeout=2)


def send(pool: Pool, to: str, n: int = 1) -> list[SendResult]:
    results = []
    for _ in range(n):
        msg = build_message(to, data={"k": "v"})
        result = SendResult(msg["message_id"])
        pool.accept(Entry(msg, result, time.monotonic(), pool.config.max_retry_seconds,
                          pool.config.zero_ttl_grace))
        results.append(result)
    return results


def test_a_login_tells_the_owner_and_acks_resolve_outcomes(make_pool):
    pool, owner = make_pool(connections=2, window=3)
    wait_until(lambda: sum(s.usable for s in pool.sessions) == 2, what="both sessions")
    assert owner.ready_calls and owner.ready_calls[-1] is True
    outcomes = [r.get(timeout=10) for r in send(pool, "device-token", 20)]
    assert {o.status for o in outcomes} == {Status.OK}
    assert pool.counters["sent"] == pool.counters["acked"] == 20
    assert sum(s.answered for s in pool.sessions) == 20
    assert not pool.active and all(s.pending == 0 for s in pool.sessions)


def test_canonical_ids_and_dead_tokens_go_to_the_owners_listeners(make_pool, emu):
    emu.set_canonical("old-token", "new-token")
    emu.set_token_error("dead-token", "DEVICE_UNREGISTERED")
    pool, owner = make_pool()
    ok, = send(pool, "old-token")
    dead, = send(pool, "dead-token")
    assert ok.get(timeout=5).canonical_id == "new-token"
    assert (dead.get(timeout=5).status, dead.get().error) == (Status.FAILED,
                                                               "DEVICE_UNREGISTERED")
    kinds = {(ev.kind, ev.token, ev.new_token) for ev in owner.tokens}
    assert kinds == {(TokenEventKind.CANONICAL, "old-token", "new-token"),
                     (TokenEventKind.UNREGISTERED, "dead-token", None)}


def test_upstream_goes_to_the_handler_and_is_acked_after_it(make_pool, emu):
    pool, _ = make_pool()
    seen: list[str] = []
    pool.upstream_handler = lambda msg: seen.append(msg.message_id)
    mid = emu.send_upstream("device-token", {"hi": "there"})
    wait_until(lambda: mid not in emu.outstanding, what="the upstream ack")
    assert seen == [mid] and pool.counters["upstream"] == 1


def test_upstream_without_a_handler_is_left_unacked(make_pool, emu):
    pool, _ = make_pool()
    mid = emu.send_upstream("device-token", {"hi": "there"})
    wait_until(lambda: pool.counters["upstream"] == 1, what="the upstream to arrive")
    acked, = send(pool, "device-token")  # an answer after it on the same connection
    assert acked.get(timeout=5).status is Status.OK
    assert mid in emu.outstanding


def test_a_server_drain_moves_work_to_a_new_session(make_pool, emu):
    pool, owner = make_pool()
    first = pool.sessions[0]
    emu.drain()
    wait_until(lambda: first.closed, what="the drained session to close")
    wait_until(lambda: any(s.usable for s in pool.sessions), what="a replacement session")
    assert pool.counters["drains"] == 1 and first.state == "closed"
    assert False in owner.ready_calls and owner.ready_calls[-1] is True
    assert [r.get(timeout=5).status for r in send(pool, "device-token", 5)] == [Status.OK] * 5


def test_messages_pending_on_a_lost_connection_are_sent_again(make_pool, emu):
    pool, _ = make_pool()
    emu.set_faults(ack_delay=30.0)
    results = send(pool, "device-token", 3)
    wait_until(lambda: len(emu.record.downstream_ids()) == 3, what="three downstream")
    emu.set_faults(ack_delay=0.0)
    emu.drop()
    assert [r.get(timeout=10).status for r in results] == [Status.OK] * 3
    assert pool.counters["resent_after_loss"] == 3
    assert [r.get().attempts for r in results] == [2, 2, 2]


def test_stop_fails_what_was_never_sent(make_pool, emu):
    pool, _ = make_pool(window=1)
    emu.set_faults(stall=True)
    results = send(pool, "device-token", 3)  # one in the window, two in the backlog
    pool.stop(timeout=0.2)
    outcomes = [r.get(timeout=5) for r in results]
    assert outcomes[0].status is Status.UNKNOWN and outcomes[0].error == "CONNECTION_LOST"
    assert [(o.status, o.error) for o in outcomes[1:]] == [(Status.FAILED, "NOT_SENT")] * 2
