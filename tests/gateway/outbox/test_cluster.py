"""The Redis outbox on a 3-master Redis Cluster and on TLS Redis: sharded keys, one slot per
script, verified TLS, passwords never shown, outcomes readable from any process."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
import redis

from ccs.gateway.outbox import open_store, shown
from ccs.gateway.outbox.base import Finish, NewMessage
from ccs.gateway.outbox.redis import RedisStore, shard_of
from ccs.gateway.settings import ConfigError
from ccs.outcome import Outcome, Status
from ccs.testing.redis_servers import RedisCluster, RedisServer
from tests.helpers import run_ccs


def msg(i: int, lane: str = "fcm") -> NewMessage:
    return NewMessage(f"c{i}", lane, {"to": f"tok{i}", "message_id": f"c{i}"}, f"tok{i}")


def ok(id_: str) -> Finish:
    return Finish(id_, Outcome(Status.OK, via="ccs", message_id="0:" + id_))


def outcome_ids(store: RedisStore) -> Counter[str]:
    return Counter(f["id"] for key in store.stream_keys("outcome")
                   for _, f in store.redis.xrange(key))


def test_shards_spread_over_every_master(cluster: RedisCluster, cluster_url: str) -> None:
    a = RedisStore(cluster_url, name="a", shards=12)
    b = RedisStore(cluster_url, name="b", shards=4)  # the outbox keeps its first count
    assert a.shards == b.shards == 12
    assert a.add([msg(i) for i in range(600)], now=1.0) == [True] * 600
    assert b.add([msg(5)], now=1.0) == [False]  # an id names its shard: stored once
    # every master holds some shards: the cluster shares the work
    per_master = {m.port: m.client().dbsize() for m in cluster.nodes
                  if m.client().info("replication")["role"] == "master"}
    assert len(per_master) == 3 and all(n > 0 for n in per_master.values()), per_master
    got_a, _ = a.claim("fcm", 400, now=2.0)
    got_b, _ = b.claim("fcm", 400, now=2.0)
    ids_a, ids_b = {r.id for r in got_a}, {r.id for r in got_b}
    assert len(ids_a) == 400 and len(ids_b) == 200 and not ids_a & ids_b
    a.finish([ok(i) for i in ids_a], now=3.0)
    b.finish([ok(i) for i in ids_b], now=3.0)
    c = a.counts()
    assert (c["ok"], c["queued"], c["in_flight"]) == (600, 0, 0)
    assert set(outcome_ids(a).values()) == {1} and len(outcome_ids(a)) == 600
    r = b.get("c17")
    assert r and r.state == "ok" and r.provider_message_id == "0:c17"
    assert a.shard("c17") == f"{{{a.target.prefix}:{shard_of('c17', 12)}}}:"
    # events: stored once per key across gateways, the seq names the shard
    seq, new = a.add_event("upstream", "dev\x00u1", {"from": "dev"}, 1.0)
    assert new and b.add_event("upstream", "dev\x00u1", {"from": "dev"}, 2.0) == (seq, False)
    (ev,) = b.pending_events("upstream", 3.0)
    assert ev.seq == seq and ev.body == {"from": "dev"}
    b.event_done([seq], 4.0)
    assert a.event_counts() == {}
    a.start_heartbeat()
    assert [g["consumer"] for g in b.gateways()] == ["a"]
    a.close()
    assert b.gateways() == []
    b.close()


def test_dedup_keys_expire_after_the_horizon(cluster_url: str) -> None:
    store = RedisStore(cluster_url, dedup_horizon=600, shards=3)
    seq, _ = store.add_event("receipt", "dr2:x1", {"message_id": "dr2:x1"}, 1.0)
    key = f"{store.shard('dr2:x1')}ek:receipt:dr2:x1"
    assert 0 < store.redis.ttl(key) <= 600 and store.redis.get(key) == str(seq // 3)
    store.event_done([seq], 2.0)
    assert store.redis.exists(key) == 1  # still remembered after it was handled
    # once forgotten (the horizon passed), the same id is new again
    store.redis.delete(key)
    seq2, new = store.add_event("receipt", "dr2:x1", {"message_id": "dr2:x1"}, 3.0)
    assert new and seq2 != seq
    store.close()


def test_result_resolves_in_any_process(cluster_url: str) -> None:
    """A plain client of the same Redis waits for an outcome another process records."""
    gateway = RedisStore(cluster_url, name="gw")
    client = RedisStore(cluster_url, name="client")
    gateway.add([msg(1), msg(2)], now=1.0)
    waiting = client.result("c1")
    assert not waiting.ready()
    claimed, _ = gateway.claim("fcm", 2, now=2.0)
    gateway.finish([ok(r.id) for r in claimed], now=3.0)
    out = waiting.get(timeout=10)
    assert out.ok and out.message_id == "0:c1" and out.via == "ccs"
    assert client.result("c2").get(timeout=1).ok  # already finished: from the record
    with pytest.raises(KeyError):
        client.result("nope")
    gateway.close()
    client.close()


def test_tls_redis_is_verified_and_the_password_never_shown(tls_redis: RedisServer,
                                                            pki: Any) -> None:
    base = f"127.0.0.1:{tls_redis.port}/0?prefix=tls"
    # CA from CCS_CA_FILE (ca_file=) and password from CCS_OUTBOX_PASSWORD (password=)
    store = open_store(f"rediss://{base}", ca_file=pki.ca_file, password="s3cret-pw")
    assert isinstance(store, RedisStore) and store.add([msg(1)], 1.0) == [True]
    sock = store.redis.connection_pool.get_connection()._sock
    assert sock.version().startswith("TLS")  # TLS on a gevent socket
    store.close()
    url = f"rediss://:s3cret-pw@{base}&ca_file={pki.ca_file}"  # both in the URL
    store = RedisStore(url)
    assert store.get("c1") is not None
    store.close()
    with pytest.raises(ConfigError) as exc:  # no CA: the server's certificate is not trusted
        RedisStore(f"rediss://:s3cret-pw@{base}")
    assert "CERTIFICATE_VERIFY_FAILED" in str(exc.value)
    with pytest.raises(ConfigError) as exc:  # a wrong password: named, not shown
        RedisStore(f"rediss://:wrong-pw@{base}&ca_file={pki.ca_file}")
    assert "wrong-pw" not in str(exc.value) and ":***@" in str(exc.value)
    # `ccs settings` shows *** for the URL's password and for CCS_OUTBOX_PASSWORD
    out = run_ccs(["settings"], env={"CCS_OUTBOX": url, "CCS_OUTBOX_PASSWORD": "other-pw"})
    assert out.returncode == 0, out.stderr
    assert "s3cret-pw" not in out.stdout and "other-pw" not in out.stdout
    assert shown(url) in out.stdout and "***" in shown(url)


def test_tls_cluster(pki: Any) -> None:
    c = RedisCluster(masters=3, tls=pki).start()
    try:
        url = c.url("tlsc")
        assert url.startswith("rediss+cluster://")
        store = RedisStore(url, ca_file=pki.ca_file, shards=6)
        assert store.add([msg(i) for i in range(60)], 1.0) == [True] * 60
        claimed, _ = store.claim("fcm", 100, 2.0)
        store.finish([ok(r.id) for r in claimed], 3.0)
        assert store.counts()["ok"] == 60
        store.close()
    finally:
        c.stop()


def test_console_enqueue_and_status_on_the_cluster(cluster_url: str) -> None:
    env = {"CCS_OUTBOX": cluster_url, "CCS_FALLBACK_PROVIDER": ""}
    r = run_ccs(["enqueue", "--tokens-file", "-"], env=env,
                input="tok-a\n{\"to\": \"tok-c\", \"message_id\": \"fixed-1\"}\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("enqueued 2 messages")
    st = run_ccs(["status", "fixed-1", "--json"], env=env)
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["state"] == "queued"
    counts = json.loads(run_ccs(["status", "--json"], env=env).stdout)
    assert counts["depth"] == 2


def test_each_shard_is_one_slot(cluster_url: str) -> None:
    """A script touches one slot: a cross-slot script would fail here, on a real cluster."""
    store = RedisStore(cluster_url, shards=8)
    r = store.redis
    assert isinstance(r, redis.RedisCluster)
    keys = [k for p in store.ps for k in (p + "counts", p + "q:fcm")]
    slots = {r.keyslot(k) for k in keys}
    assert len(slots) == 8  # one slot per shard
    store.close()


def test_scripts_missing_on_a_node_are_loaded_again(crash_redis: RedisServer) -> None:
    """A restarted Redis (or a promoted replica) has no scripts: the shard pipeline loads them
    and runs again."""
    store = RedisStore(f"redis://127.0.0.1:{crash_redis.port}/0?prefix=nos", shards=8)
    assert store.add([msg(i) for i in range(40)], 1.0) == [True] * 40
    admin = crash_redis.client()
    admin.script_flush()
    assert store.add([msg(i) for i in range(30, 80)], 2.0) == [False] * 10 + [True] * 40
    claimed, _ = store.claim("fcm", 100, 3.0)
    admin.script_flush()
    store.finish([ok(r.id) for r in claimed], 4.0)
    assert store.counts()["ok"] == 80
    admin.close()
    store.close()
