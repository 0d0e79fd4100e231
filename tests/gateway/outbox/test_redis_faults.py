"""Redis going away under a running gateway: killed and restarted (append-only file on), a
replica promoted in a cluster. The gateway keeps running, refuses new messages clearly while
nothing can be written (503 + Retry-After over the API), accepts again after, and every message
it accepted ends in exactly one outcome."""

from __future__ import annotations

import http.client
import json
from collections import Counter
from typing import Any

import gevent
import pytest

from ccs.gateway.outbox.base import StoreUnavailable
from ccs.gateway.outbox.redis import RedisStore
from ccs.gateway.settings import Settings
from ccs.gateway.supervisor import Supervisor
from ccs.testing.redis_servers import RedisCluster, RedisServer
from tests.helpers import wait_until
from tests.providers import LocalProvider

TOKEN = "faults-admin-token"


class Producer:
    """Enqueues batches with fixed message ids; a refused batch is offered again (a stored id
    is stored once, so a reply lost with Redis cannot duplicate it)."""

    def __init__(self, sup: Supervisor, total: int, batch: int = 50) -> None:
        self.sup, self.total, self.batch = sup, total, batch
        self.accepted: list[str] = []
        self.refused = 0
        self.greenlet = gevent.spawn(self.run)

    def run(self) -> None:
        n = 0
        while n < self.total:
            msgs = [{"to": f"t{i}", "message_id": f"f{i:06d}"} for i in range(n, n + self.batch)]
            try:
                self.accepted += self.sup.enqueue_many(msgs)
                n += self.batch
            except StoreUnavailable:
                self.refused += 1
            gevent.sleep(0.01)  # a steady producer, not a flood


def post(port: int, body: dict[str, Any]) -> tuple[int, str | None, dict[str, Any]]:
    def call() -> tuple[int, str | None, dict[str, Any]]:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("POST", "/v1/messages", json.dumps(body),
                  {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        r = c.getresponse()
        out = (r.status, r.getheader("Retry-After"), json.loads(r.read()))
        c.close()
        return out

    return gevent.get_hub().threadpool.apply(call)


def gateway(url: str) -> tuple[Supervisor, LocalProvider]:
    s = Settings.defaults().replace(admin__port=0, admin__token=TOKEN, outbox__path=url,
                                    outbox__heartbeat=0.1, outbox__reclaim_idle=1.0,
                                    gateway__concurrency=100)
    ccs = LocalProvider("ccs", delay=0.005)
    return Supervisor(s, providers={"ccs": ccs}).start(), ccs


def check_one_outcome_each(url: str, accepted: list[str], ccs: LocalProvider) -> Counter[str]:
    store = RedisStore(url)
    try:
        try:
            wait_until(lambda: store.counts()["ok"] == len(set(accepted)), timeout=60,
                       what="every accepted message sent")
        except AssertionError:
            raise AssertionError(f"{store.counts()} for {len(set(accepted))} accepted") from None
        c = store.counts()
        assert (c["queued"], c["in_flight"], c["failed"], c["unknown"]) == (0, 0, 0, 0)
        per_id = Counter(f["id"] for key in store.stream_keys("outcome")
                         for _, f in store.redis.xrange(key))
        assert set(per_id) == set(accepted) and set(per_id.values()) == {1}
    finally:
        store.close()
    sent = Counter(m["message_id"] for m in ccs.received)
    assert set(accepted) <= set(sent), sorted(set(accepted) - set(sent))[:20]
    return sent


def test_redis_killed_and_restarted_mid_run(crash_redis: RedisServer) -> None:
    url = f"redis://127.0.0.1:{crash_redis.port}/0?prefix=crash"
    sup, ccs = gateway(url)
    producer = Producer(sup, total=3000)
    try:
        wait_until(lambda: len(producer.accepted) >= 600, timeout=30, what="sending under way")
        crash_redis.kill()  # SIGKILL: what was acknowledged is in the append-only file
        wait_until(lambda: not sup.health()["outbox"]["ok"], timeout=10,
                   what="health says Redis is down")
        assert sup.health()["ok"] is False and "Redis" in sup.health()["outbox"]["error"]
        status, retry_after, body = post(sup.admin.port, {"message": {"to": "x"}})
        assert status == 503 and retry_after is not None and int(retry_after) >= 1
        assert "unavailable" in body["error"]
        with pytest.raises(StoreUnavailable):
            sup.enqueue({"to": "refused"})
        wait_until(lambda: producer.refused > 0, what="the producer refused meanwhile")
        crash_redis.start()  # same port, same directory: the AOF is loaded
        wait_until(lambda: sup.health()["outbox"]["ok"], timeout=30, what="health back")
        status, _, body = post(sup.admin.port, {"message": {"to": "y", "message_id": "after"}})
        assert status == 202 and body["ids"] == ["after"]
        producer.greenlet.join(timeout=60)
        assert producer.greenlet.dead and len(producer.accepted) == 3000
        accepted = [*producer.accepted, "after"]
        sent = check_one_outcome_each(url, accepted, ccs)
        # sent twice only what was in flight (at most the provider's concurrency) at the kill
        assert sum(n - 1 for n in sent.values()) <= 100
        assert sup.health()["ok"]
        assert all(c.restarts == 0 for c in sup.children.values())  # nothing crashed
    finally:
        producer.greenlet.kill()
        sup.stop()


def test_replica_promoted_mid_run(cluster: RedisCluster, cluster_url: str) -> None:
    sup, ccs = gateway(cluster_url)
    # a plain client following every outcome as it comes (its reads block on the masters)
    follower = RedisStore(cluster_url, name="follower")
    seen: Counter[str] = Counter()

    def follow() -> None:
        for _, data in follower.tail(["outcome"], block_ms=500, start="0-0"):
            seen[data["id"]] += 1

    watcher = gevent.spawn(follow)
    producer = Producer(sup, total=3000)
    try:
        wait_until(lambda: len(producer.accepted) >= 600, timeout=30, what="sending under way")
        store: Any = sup.store
        victim = cluster.master_of(store.ps[0] + "counts")
        promoted = cluster.failover(victim)  # CLUSTER FAILOVER on its replica, mid-run
        assert cluster.master_of(store.ps[0] + "counts") is promoted
        producer.greenlet.join(timeout=60)
        assert producer.greenlet.dead and len(producer.accepted) == 3000
        sent = check_one_outcome_each(cluster_url, producer.accepted, ccs)
        assert sum(n - 1 for n in sent.values()) <= 100
        assert sup.health()["ok"]
        # the follower read through the failover (a blocked read on the demoted master is
        # answered UNBLOCKED) and saw each outcome once
        wait_until(lambda: len(seen) >= 3000, timeout=20, what="the follower caught up")
        assert set(seen) == set(producer.accepted) and set(seen.values()) == {1}
        assert not watcher.dead
    finally:
        watcher.kill()
        follower.close()
        producer.greenlet.kill()
        sup.stop()


def test_connections_dropped_mid_run(crash_redis: RedisServer) -> None:
    """A network drop: Redis closes every client connection, again and again, while the
    gateway sends; it reconnects and every accepted message still has one outcome."""
    url = f"redis://127.0.0.1:{crash_redis.port}/0?prefix=drop"
    sup, ccs = gateway(url)
    producer = Producer(sup, total=2000)
    admin = crash_redis.client()
    drops = 0
    try:
        while not producer.greenlet.dead:
            wait_until(lambda n=len(producer.accepted): len(producer.accepted) > n
                       or producer.greenlet.dead, timeout=30, what="more accepted")
            drops += admin.client_kill_filter(_type="normal", skipme=True)
        assert len(producer.accepted) == 2000 and drops >= 10
        sent = check_one_outcome_each(url, producer.accepted, ccs)
        assert sum(n - 1 for n in sent.values()) <= 100
        wait_until(lambda: sup.health()["ok"], what="health back once connected again")
    finally:
        admin.close()
        producer.greenlet.kill()
        sup.stop()
