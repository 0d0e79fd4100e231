"""Tried as a new user would: three masters, two `ccs run` on redis+cluster://, 5,000 messages
from `ccs enqueue` against the same URL, one gateway SIGKILLed mid-run."""

from __future__ import annotations

import json
import signal
from collections import Counter
from typing import Any

from ccs.gateway.outbox.redis import RedisStore
from ccs.xmpp.emulator import CcsEmulator
from tests.gateway.test_many_gateways import KEY, SENDER, gateway_env, start
from tests.helpers import run_ccs, stop_gateways, wait_until

TOTAL = 5000


def test_two_gateways_on_the_cluster_one_killed(pki: Any, cluster_url: str) -> None:
    with CcsEmulator(sender_id=SENDER, server_key=KEY, pki=pki, record_limit=None) as emu:
        env = gateway_env(emu, cluster_url)
        store = RedisStore(cluster_url)
        a, b = start(env), start(env)
        try:
            wait_until(lambda: len(store.gateways()) == 2 and all(
                any(x["state"] == "ready" for x in g.get("sessions", []))
                for g in store.gateways()), timeout=30, what="two gateways with CCS sessions")
            tokens = "".join(f'{{"to": "tok{i}", "message_id": "u{i:05d}"}}\n'
                             for i in range(TOTAL))
            r = run_ccs(["enqueue", "--tokens-file", "-", "--data", '{"k": "v"}'], env=env,
                        input=tokens)
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith(f"enqueued {TOTAL} messages")
            wait_until(lambda: emu.record.totals["downstream"] >= 1000, timeout=60,
                       what="sending under way")
            a.send_signal(signal.SIGKILL)
            a.wait()
            assert store.counts()["ok"] < TOTAL  # the kill came in the middle
            wait_until(lambda: store.counts()["ok"] == TOTAL, timeout=90,
                       what="every message acked")
        finally:
            err = stop_gateways(a, b)
        assert b.returncode == 0, err
        ids = {f"u{i:05d}" for i in range(TOTAL)}
        per_id = Counter(f["id"] for key in store.stream_keys("outcome")
                         for _, f in store.redis.xrange(key))
        assert set(per_id) == ids and set(per_id.values()) == {1}
        assert set(emu.record.downstream_ids()) == ids
        # duplicates: only what the killed gateway held (its window, at most its concurrency)
        c = store.counts()
        print(f"taken over from the killed gateway: {c['resent']}; emulator duplicates "
              f"{emu.record.duplicates}")
        assert emu.record.duplicates <= c["resent"] <= 300 + 2 * 100
        for mid in emu.record.duplicate_ids:
            assert store.get(mid).resent == 1  # type: ignore[union-attr]
        # `ccs status` against the same URL: nothing queued or in flight, no gateway left
        st = json.loads(run_ccs(["status", "--json"], env=env).stdout)
        assert st["depth"] == 0 and st["outbox"]["in_flight"] == 0 and st["outbox"]["ok"] == TOTAL
        assert st["gateways"] == []
        text = run_ccs(["status", "u00042"], env=env)
        assert text.returncode == 0 and "state: ok" in text.stdout
        store.close()
