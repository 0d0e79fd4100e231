"""RedisStore.recover() after a gateway killed in the middle of a claim."""

from __future__ import annotations

import time

from ccs.gateway.outbox.base import NewMessage
from ccs.gateway.outbox.redis import GROUP, RedisStore
from ccs.gateway.outbox.redis_read import shard_of
from tests.helpers import wait_until


def test_a_claim_cut_between_read_and_script_is_not_stranded_by_recover(redis_url: str) -> None:
    """The dead gateway read the entry (XREADGROUP) but died before the claim script: the
    record is still queued on that entry. A gateway starting next must not ack it away."""
    dead = RedisStore(redis_url, reclaim_idle=0.2, heartbeat=0.05)
    now = time.time()
    dead.add([NewMessage("m1", "fcm", {"to": "t", "message_id": "m1"}, "t")], now)
    q = dead._group("fcm", shard_of("m1", dead.shards))  # the lane's queue in m1's shard
    read = dead.redis.xreadgroup(GROUP, dead.consumer, {q: ">"}, count=10)
    assert [f["id"] for _, rows in read for _, f in rows] == ["m1"]
    live = RedisStore(redis_url, reclaim_idle=0.2, heartbeat=0.05)
    assert live.recover(now) == 0  # it was never in flight
    got: list[str] = []

    def claimed() -> bool:
        rows, _ = live.claim("fcm", 10, time.time())
        got.extend(r.id for r in rows)
        return bool(got)

    wait_until(claimed, timeout=10, what="the stranded message claimed again")
    assert got == ["m1"] and live.get("m1").state == "in_flight"  # type: ignore[union-attr]
    assert live.get("m1").resent == 0  # type: ignore[union-attr]
    dead.close()
    live.close()
