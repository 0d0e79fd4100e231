#!/usr/bin/env python3
"""Throughput of 1, 2 and 4 `ccs run` processes sharing one Redis outbox, of one gateway on
Redis against one on SQLite, and of gateways on a 3-master Redis Cluster (started here on
loopback ports) with several shard counts, in one run.

Each gateway process has its own CCS emulator process (its own connections). For each setup
the gateways start first; the clock runs from the moment --count messages are enqueued until
the outbox records an outcome for every one; the best of --rounds counts. Loopback only;
bounded by --count, --rounds and --timeout (default run: about a minute).
This machine has 2 cores: more processes than cores compete for them (gateways, emulators,
Redis and this script), so the numbers show the cost of sharing, not a scaling limit.
Setups: sqlite; pN = N gateways on one Redis (default shards); s1 = 1 gateway, one Redis, 1
shard; cN-sK = N gateways on the cluster with K shards.
Last line: `result: p1_per_s=<n> p2_per_s=<n> p4_per_s=<n> redis_vs_sqlite=<x> c2_per_s=<n> ...`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import gevent

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.scale_support import (  # noqa: E402
    REDIS,
    Gateways,
    cleanup,
    emulator,
    make_messages,
    redis_latency,
)


def run(n: int, count: int, outbox: str, timeout: float, connections: int,
        shards: int | None = None) -> float:
    from ccs.gateway.outbox import open_store

    emus = [emulator() for _ in range(n)]
    extra = {"CCS_OUTBOX_SHARDS": str(shards)} if shards else {}
    gws = Gateways(outbox, emus, connections=connections, **extra)
    store = open_store(outbox, **({"shards": shards} if shards else {}))
    try:
        gws.start_all()
        gws.wait_ready(store, timeout=30)
        began = time.monotonic()
        ids = []
        for chunk in make_messages(count, 2000):
            ids += [m.id for m in chunk]
            store.add(chunk, time.time())
        deadline = began + timeout
        while store.counts()["ok"] < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"{n} gateways: only {store.counts()} after {timeout}s")
            gevent.sleep(0.02)
        elapsed = time.monotonic() - began
    finally:
        store.close()
        gws.stop()
        for proc, _ in emus:
            proc.terminate()
            proc.wait()
    return count / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20000, help="messages per setup")
    ap.add_argument("--connections", type=int, default=2, help="CCS connections per gateway")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per setup at most")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; the best of each counts")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()} (gateways, their emulators, Redis and this script share "
          "them)", flush=True)
    g, t = redis_latency()
    print(f"redis-py PING round trip: {g:.0f} us on a gevent socket, {t:.0f} us through "
          "gevent's threadpool", flush=True)
    rates: dict[str, float] = {}
    # (name, gateways, outbox kind, shards): the outbox keeps the shard count it starts with
    setups = (("sqlite", 1, "sqlite", None), ("p1", 1, "redis", None), ("s1", 1, "redis", 1),
              ("p2", 2, "redis", None), ("p4", 4, "redis", None), ("c1-s16", 1, "cluster", 16),
              ("c2-s3", 2, "cluster", 3), ("c2-s16", 2, "cluster", 16),
              ("c2-s48", 2, "cluster", 48), ("c4-s16", 4, "cluster", 16))
    from ccs.testing.redis_servers import RedisCluster

    cluster = RedisCluster(masters=3).start()
    print(f"cluster: 3 masters on ports {[s.port for s in cluster.nodes]}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            for round_ in range(args.rounds):  # best of the rounds: this machine is shared
                for name, n, kind, shards in setups:
                    prefix = f"bench-{secrets.token_hex(4)}"
                    url = {"sqlite": str(Path(tmp) / f"outbox{round_}.sqlite"),
                           "redis": f"{REDIS}?prefix={prefix}",
                           "cluster": cluster.url(prefix)}[kind]
                    try:
                        rate = run(n, args.count, url, args.timeout, args.connections, shards)
                    finally:
                        if kind == "redis":
                            cleanup(prefix)
                    rates[name] = max(rates.get(name, 0.0), rate)
                    where = {"sqlite": "SQLite outbox", "redis": "Redis outbox",
                             "cluster": "3-master cluster"}[kind]
                    print(f"round {round_ + 1} {name}: {n} gateway(s), {where}"
                          f"{f', {shards} shards' if shards else ''}: {rate:.0f} messages/s",
                          flush=True)
    finally:
        cluster.stop()
    print(f"result: p1_per_s={rates['p1']:.0f} p2_per_s={rates['p2']:.0f} "
          f"p4_per_s={rates['p4']:.0f} redis_vs_sqlite={rates['p1'] / rates['sqlite']:.2f} "
          f"s1_per_s={rates['s1']:.0f} c2_per_s={rates['c2-s16']:.0f} "
          f"c4_per_s={rates['c4-s16']:.0f} c2_s3_per_s={rates['c2-s3']:.0f} "
          f"c2_s48_per_s={rates['c2-s48']:.0f}")


if __name__ == "__main__":
    main()
