"""The Redis outbox across processes: takeover by XAUTOCLAIM, heartbeats, connection leases."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import gevent
import pytest
import redis

from ccs.gateway.lease import Leases
from ccs.gateway.outbox import open_store
from ccs.gateway.outbox.base import Finish, NewMessage
from ccs.gateway.outbox.redis import RedisStore
from ccs.gateway.outbox.redis_url import parse
from ccs.gateway.settings import ConfigError
from ccs.outcome import Outcome, Status
from ccs.xmpp.client import CcsClient, CcsConfig
from ccs.xmpp.emulator import CcsEmulator
from tests.helpers import wait_until
from tests.redis_support import REDIS


def msg(i: int, lane: str = "fcm") -> NewMessage:
    return NewMessage(f"m{i}", lane, {"to": f"tok{i}", "message_id": f"m{i}"}, f"tok{i}")


def ok(id_: str) -> Finish:
    return Finish(id_, Outcome(Status.OK, via="ccs", message_id=id_))


def test_url_and_configuration_errors(redis_url: str) -> None:
    t = parse("redis://h:1/2?prefix=p")
    assert (t.cluster, t.tls, t.nodes, t.db, t.prefix, t.password) == (
        False, False, (("h", 1),), 2, "p", None)
    t = parse("rediss+cluster://u:p%40ss@a:7000,[::1]:7001/?prefix=q&ca_file=/c.pem", "env-pw")
    assert (t.cluster, t.tls, t.nodes, t.username, t.password, t.ca_file) == (
        True, True, (("a", 7000), ("::1", 7001)), "u", "p@ss", "/c.pem")
    assert "p@ss" not in repr(t)
    t = parse("redis+cluster://a:1", "env-pw", "/ca.pem")
    assert (t.password, t.ca_file, t.prefix, t.tls) == ("env-pw", None, "ccs", False)
    assert parse("rediss://a:1", None, "/ca.pem").ca_file == "/ca.pem"  # CCS_CA_FILE
    for bad, words in [("redis://h:1?socket_timeout=3", "unknown option 'socket_timeout'"),
                       ("redis://a:1,b:2/0", "several hosts need redis+cluster"),
                       ("redis+cluster://a:1/3", "only database 0"),
                       ("redis://h:x/0", "bad host:port"),
                       ("redis://h:1/0?ca_file=/x", "needs a TLS URL"),
                       ("redis://h:1/0?prefix={x}", "without braces"),
                       ("rediss+clusterx://h:1", "expected redis://")]:
        with pytest.raises(ConfigError, match="outbox.path") as exc:
            parse(bad)
        assert words in str(exc.value), (bad, str(exc.value))
    with pytest.raises(ConfigError) as exc:
        parse("redis://:hunter2@h:x/0")
    assert "hunter2" not in str(exc.value)
    from ccs.gateway.outbox import shown

    assert shown("rediss+cluster://u:pw@a:1,b:2/?prefix=q") == \
        "rediss+cluster://u:***@a:1,b:2/?prefix=q"
    assert shown("redis://:p@ss@h?prefix=x") == "redis://:***@h?prefix=x"
    assert shown("redis://h:1/0?prefix=x") == "redis://h:1/0?prefix=x"
    with pytest.raises(ConfigError, match="outbox.reclaim_idle"):
        RedisStore(redis_url, reclaim_idle=1.0, heartbeat=1.0)
    with pytest.raises(ConfigError, match="cannot reach Redis"):
        RedisStore("redis://127.0.0.1:1/0")  # nothing listens on port 1
    store = open_store(redis_url)
    assert isinstance(store, RedisStore)
    store.close()
    # a password in the URL never reaches messages or the printed settings
    with pytest.raises(ConfigError) as exc:
        RedisStore("redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in str(exc.value) and ":***@" in str(exc.value)
    from ccs.gateway.settings import Settings

    s = Settings.defaults().replace(outbox__path="redis://u:hunter2@h/0?prefix=x")
    assert s.redacted()["outbox.path"] == "redis://u:***@h/0?prefix=x"
    assert "hunter2" not in repr(s) and s["outbox.path"].endswith("hunter2@h/0?prefix=x")


def test_two_consumers_share_a_lane_without_overlap(redis_url: str) -> None:
    a, b = RedisStore(redis_url, name="a"), RedisStore(redis_url, name="b")
    a.add([msg(i) for i in range(100)], now=1.0)
    got_a, _ = a.claim("fcm", 60, now=2.0)
    got_b, _ = b.claim("fcm", 60, now=2.0)
    ids_a, ids_b = {r.id for r in got_a}, {r.id for r in got_b}
    assert len(ids_a) == 60 and len(ids_b) == 40 and not ids_a & ids_b
    a.finish([ok(i) for i in ids_a], now=3.0)
    b.finish([ok(i) for i in ids_b], now=3.0)
    c = a.counts()
    assert (c["ok"], c["queued"], c["in_flight"], c["resent"]) == (100, 0, 0, 0)
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    outcomes = [f["id"] for key in a.stream_keys("outcome") for _, f in r.xrange(key)]
    assert sorted(outcomes) == sorted(ids_a | ids_b)  # one outcome each
    a.close()
    b.close()


def test_payloads_round_trip_exactly(redis_url: str) -> None:
    store = RedisStore(redis_url)
    payload = {"to": "t/ø\u2603", "data": {"k": "a\"b\\c</x>", "e": "\U0001f600", "n": "1.50"},
               "nested": [1, 2.5, None, True], "message_id": "u1"}
    store.add([NewMessage("u1", "fcm", payload, "t/ø", expires_at=None)], now=1.0)
    (r,), _ = store.claim("fcm", 1, now=2.0)
    assert r.payload == payload and r.to == "t/ø" and r.expires_at is None
    assert store.get("u1").payload == payload  # type: ignore[union-attr]
    store.close()


def test_finished_records_expire_after_record_ttl(redis_url: str) -> None:
    store = RedisStore(redis_url, record_ttl=30.0)
    store.add([msg(1), msg(2), NewMessage("m3", "fcm", {"to": "t"}, "t", expires_at=1.5)], 1.0)
    claimed, expired = store.claim("fcm", 10, now=2.0)
    assert [r.id for r in expired] == ["m3"]
    store.finish([ok("m1")], now=3.0)
    ttl = {i: store.redis.pttl(f"{store.shard(i)}m:{i}") for i in ("m1", "m2", "m3")}
    assert 0 < ttl["m1"] <= 30_000 and 0 < ttl["m3"] <= 30_000
    assert ttl["m2"] == -1  # in flight: kept until it has an outcome
    store.close()


def test_xautoclaim_takes_over_from_a_silent_consumer(redis_url: str) -> None:
    dead = RedisStore(redis_url, name="dead", reclaim_idle=0.2, heartbeat=0.05)
    dead.add([msg(i) for i in range(10)], now=1.0)
    held, _ = dead.claim("fcm", 4, now=2.0)
    dead.close()  # died holding 4: no release, no heartbeat
    alive = RedisStore(redis_url, name="alive", reclaim_idle=0.2, heartbeat=0.05)
    first, _ = alive.claim("fcm", 10, now=3.0)
    # not idle long enough yet: only what the dead one never claimed
    assert {r.id for r in first} == {f"m{i}" for i in range(10)} - {r.id for r in held}
    got: list[Any] = []

    def reclaimed() -> bool:
        got.extend(alive.claim("fcm", 10, now=4.0)[0])
        return len(got) >= 4

    wait_until(reclaimed, timeout=5, what="XAUTOCLAIM takeover")
    assert {r.id for r in got} == {r.id for r in held}
    assert all(r.attempts == 2 and r.resent == 1 for r in got) and alive.reclaimed == 4
    alive.finish([ok(r.id) for r in first + got], now=5.0)
    c = alive.counts()
    assert (c["ok"], c["in_flight"], c["resent"]) == (10, 0, 4)
    alive.close()


def test_heartbeat_keeps_held_messages_from_takeover(redis_url: str) -> None:
    slow = RedisStore(redis_url, name="slow", reclaim_idle=0.3, heartbeat=0.05)
    slow.start_heartbeat(lambda: {"sessions": [{"id": 1, "state": "ready"}]})
    slow.add([msg(i) for i in range(3)], now=1.0)
    held, _ = slow.claim("fcm", 3, now=2.0)
    other = RedisStore(redis_url, name="other", reclaim_idle=0.3, heartbeat=0.05)
    deadline = time.monotonic() + 1.0  # over three reclaim_idle periods
    while time.monotonic() < deadline:
        assert other.claim("fcm", 10, now=3.0) == ([], [])
        gevent.sleep(0.05)
    (gw,) = other.gateways()
    assert gw["consumer"] == "slow" and gw["sessions"][0]["state"] == "ready" and gw["held"] == 3
    slow.close()  # presence goes at once; the held messages wait for reclaim_idle
    assert other.gateways() == []
    other.close()


def test_redis_calls_yield_to_the_hub_without_monkey_patching(redis_url: str) -> None:
    import gevent.monkey

    assert not gevent.monkey.is_module_patched("socket")
    store = RedisStore(redis_url)
    ticks: list[float] = []

    def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    t = gevent.spawn(ticker)
    gevent.sleep(0)
    began = time.monotonic()
    store.redis.xread({store.g + "s:none": "$"}, block=300)  # waits 300 ms server-side
    assert time.monotonic() - began >= 0.25
    assert len(ticks) >= 10  # the ticker ran meanwhile: the hub was not blocked
    t.kill()
    store.close()


def test_leases_budget_and_expiry(redis_url: str) -> None:
    r = redis.Redis.from_url(REDIS, decode_responses=True)
    key = parse(redis_url).prefix + ":leases:s1"
    one, two = Leases(r, key, budget=3, ttl=0.3), Leases(r, key, budget=3, ttl=0.3)
    a1, a2 = one.take(), one.take()
    b1 = two.take()
    assert a1 and a2 and b1 and two.take() is None and two.refused == 1
    assert one.in_use() == 3
    b1()  # given back at once
    b2 = two.take()
    assert b2 is not None and two.take() is None
    # `one` dies: no refresh; its leases expire after ttl while `two` keeps its own
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        two.refresh()
        gevent.sleep(0.05)
    assert two.in_use() == 1 and two.take() is not None and two.take() is not None
    assert two.take() is None
    two.close()
    assert two.in_use() == 0
    r.close()


def test_a_give_back_killed_on_the_wire_still_gives_the_lease_back(crash_redis: Any) -> None:
    """The root cause of leases outliving a stopped client: the pool's stop kills session
    greenlets that are giving their lease back, with the ZREM on the wire."""
    from ccs.gateway.outbox.redis_conn import connect
    from ccs.gateway.outbox.redis_url import parse

    r = connect(parse(f"redis://127.0.0.1:{crash_redis.port}/0"))
    leases = Leases(r, "L", budget=2, ttl=60.0)  # expiry cannot be what frees it here
    give_back = leases.take()
    assert give_back is not None and leases.in_use() == 1
    admin = crash_redis.client()
    admin.execute_command("CLIENT PAUSE", 10_000, "WRITE")  # the ZREM waits in the server
    try:
        g = gevent.spawn(give_back)
        wait_until(lambda: admin.info("clients")["blocked_clients"] == 1,
                   what="the ZREM on the wire")
        g.kill()  # as Pool.stop kills a closing session's greenlet
    finally:
        admin.execute_command("CLIENT UNPAUSE")
    wait_until(lambda: not leases.returning, timeout=5, what="the give-back finished")
    assert leases.in_use() == 0 and not leases.held
    admin.close()
    r.close()


SENDER, KEY = "777000111", "lease-test-key"


def test_ccs_pool_takes_leases_before_sessions(redis_url: str, pki: Any) -> None:
    with CcsEmulator(sender_id=SENDER, server_key=KEY, pki=pki, max_connections=3) as emu:
        # Leases live 15 s (three 5 s heartbeats): expiry never frees one during this test,
        # so every lease counted free below was given back.
        stores = [RedisStore(redis_url, name=n, heartbeat=5.0, reclaim_idle=10.0)
                  for n in ("g1", "g2")]
        clients = []
        for store in stores:
            cfg = CcsConfig(sender_id=SENDER, server_key=KEY, host=emu.host, port=emu.port,
                            ca_file=emu.ca_file, connections=2, reconnect_initial=0.05,
                            reconnect_max=0.1)
            cfg.lease = store.connection_lease(SENDER, budget=3)
            store.start_heartbeat()
            clients.append(CcsClient(cfg))
        try:
            for c in clients:
                c.start()
            wait_until(lambda: emu.authenticated_count() == 3, what="three sessions")

            def ready(c: CcsClient) -> int:
                return sum(s.usable for s in c._pool.sessions)

            wait_until(lambda: sum(ready(c) for c in clients) == 3, what="three ready")
            wait_until(lambda: sum(c.stats()["lease_waits"] for c in clients) > 2,
                       what="the fourth slot waits for a lease")
            assert emu.authenticated_count() == 3 and sum(ready(c) for c in clients) == 3
            first = next(c for c in clients if ready(c) == 2)
            other = clients[1 - clients.index(first)]
            leases = stores[0]._leases[0]
            assert leases.in_use() == 3
            emu.drop()  # every connection dies: the leases go back and are taken again
            wait_until(lambda: sum(c.stats()["reconnects"] for c in clients) >= 3
                       and sum(ready(c) for c in clients) == 3
                       and emu.authenticated_count() == 3, what="sessions back")
            assert leases.in_use() == 3 and emu.authenticated_count() == 3
            first.stop(timeout=1)  # its sessions close: their leases go back
            wait_until(lambda: ready(other) == 2, what="the other takes the freed lease")
            # the stopped client holds none: both of its leases went back when it stopped
            assert leases.in_use() == 2 and not stores[clients.index(first)]._leases[0].held
            assert other.send({"to": "t", "message_id": "x1"}).get(timeout=5).ok
        finally:
            for c in clients:
                c.stop(timeout=1)
            for s in stores:
                s.close()


PATCHED = """
from gevent import monkey; monkey.patch_all()
import sys
from ccs.gateway.settings import Settings
from ccs.gateway.supervisor import Supervisor
from tests.providers import LocalProvider
s = Settings.defaults().replace(admin__enabled=False, outbox__path=sys.argv[1],
                                outbox__heartbeat=0.05, outbox__reclaim_idle=0.2)
sup = Supervisor(s, providers={"ccs": LocalProvider("ccs")}).start()
ids = sup.enqueue_many([{"to": f"t{i}"} for i in range(300)])
assert all(sup.result(i).get(timeout=10).ok for i in ids)
assert sup.stats()["outbox"]["ok"] == 300 and sup.status(ids[0])["state"] == "ok"
assert len(sup.store.gateways()) == 1
sup.stop()
print("patched ok")
"""


def test_supervisor_on_redis_under_monkey_patch_all(redis_url: str) -> None:
    import subprocess
    import sys

    from tests.helpers import ROOT, ccs_env

    r = subprocess.run([sys.executable, "-c", PATCHED, redis_url], env=ccs_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "patched ok" in r.stdout


def test_supervisor_on_redis_publishes_outcomes_and_token_events(redis_url: str) -> None:
    from ccs.gateway.settings import Settings
    from ccs.gateway.supervisor import Supervisor
    from ccs.outcome import TokenEvent, TokenEventKind
    from tests.providers import LocalProvider

    s = Settings.defaults().replace(admin__enabled=False, outbox__path=redis_url,
                                    outbox__heartbeat=0.05, outbox__reclaim_idle=0.2)
    ccs = LocalProvider("ccs")
    sup = Supervisor(s, providers={"ccs": ccs}).start()
    tail = RedisStore(redis_url)
    follow = tail.tail(["outcome", "token"], block_ms=200)
    try:
        mid = sup.enqueue({"to": "t1"})
        assert sup.result(mid).get(timeout=5).ok
        ccs.token_events.emit(TokenEvent(TokenEventKind.UNREGISTERED, "ccs", "dead"))
        with gevent.Timeout(10):
            got = [next(follow), next(follow)]
        kinds = {k: d for k, d in got}
        assert kinds["outcome"]["id"] == mid and kinds["outcome"]["status"] == "ok"
        assert kinds["token"]["token"] == "dead" and kinds["token"]["kind"] == "unregistered"
        (gw,) = tail.gateways()
        assert gw["providers"] == {"ccs": True} and gw["pid"] > 0
    finally:
        sup.stop()
        tail.close()


def test_console_enqueue_and_status_against_redis(redis_url: str) -> None:
    from tests.helpers import run_ccs

    env = {"CCS_OUTBOX": redis_url, "CCS_FALLBACK_PROVIDER": ""}
    r = run_ccs(["enqueue", "--tokens-file", "-", "--data", '{"k": "v"}'], env=env,
                input="tok-a\ntok-b\n{\"to\": \"tok-c\", \"message_id\": \"fixed-1\"}\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("enqueued 3 messages")
    st = run_ccs(["status", "fixed-1", "--json"], env=env)
    assert st.returncode == 0, st.stderr
    rec = json.loads(st.stdout)
    assert rec["state"] == "queued" and rec["to"] == "tok-c" and rec["lane"] == "fcm"
    counts = json.loads(run_ccs(["status", "--json"], env=env).stdout)
    assert counts["depth"] == 3 and counts["gateways"] == []  # enqueue is not a gateway
    missing = run_ccs(["status", "nope"], env=env)
    assert missing.returncode == 1 and "no message 'nope'" in missing.stderr


def test_ccs_tail_follows_the_shared_streams(redis_url: str) -> None:
    import sys

    from gevent import subprocess

    from tests.helpers import ROOT, ccs_env

    store = RedisStore(redis_url)
    seq, _ = store.add_event("upstream", "dev\x00u1", {"from": "dev", "data": {"a": "1"}}, 1.0)
    (kind, data), = list(itertools.islice(store.tail(["upstream"], start="0-0"), 1))
    assert kind == "upstream" and data["seq"] == str(seq) and data["from"] == "dev"
    proc = subprocess.Popen([sys.executable, "-m", "ccs", "tail", "--kinds", "outcome,token"],
                            env=ccs_env({"CCS_OUTBOX": redis_url}), cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = gevent.spawn(lambda: lines.append(proc.stdout.readline()))  # type: ignore
    try:
        # `ccs tail` starts at the streams' ends: publish until its first line arrives
        wait_until(lambda: bool(store.publish("token", {"token": "dead", "kind": "invalid"}))
                   or bool(lines), timeout=20, what="a line from ccs tail")
        line = json.loads(lines[0])
        assert line["event"] == "token" and line["token"] == "dead"
    finally:
        proc.terminate()
        proc.wait()
        reader.kill()
        store.close()


def test_a_lost_consumer_group_is_made_again(redis_url: str) -> None:
    """A failover that lost a stream's group (or a deleted stream) must not stop its lane."""
    store = RedisStore(redis_url, shards=1)
    store.add([msg(1)], now=1.0)
    assert [r.id for r in store.claim("fcm", 10, now=2.0)[0]] == ["m1"]
    store.redis.delete(f"{store.ps[0]}q:fcm")  # the group goes with the stream
    store.add([msg(2)], now=3.0)  # XADD makes the stream again, without a group
    got: list[Any] = []
    wait_until(lambda: bool(got.extend(store.claim("fcm", 10, now=4.0)[0]) or got),
               what="the lane claiming again")
    assert [r.id for r in got] == ["m2"]
    store.close()
