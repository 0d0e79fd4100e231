#!/usr/bin/env python3
"""Throughput of 1, 2 and 4 `ccs run` processes sharing one Redis outbox, and of one gateway on
Redis against one on SQLite, in one run.

Each gateway process has its own CCS emulator process (its own connections). For each setup
the gateways start first; the clock runs from the moment --count messages are enqueued until
the outbox records an outcome for every one. Loopback only; bounded by --count and --timeout.
This machine has 2 cores: more processes than cores compete for them (gateways, emulators,
Redis and this script), so the numbers show the cost of sharing, not a scaling limit.
Last line: `result: p1_per_s=<n> p2_per_s=<n> p4_per_s=<n> redis_vs_sqlite=<x>`.
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


def run(n: int, count: int, outbox: str, timeout: float, connections: int) -> float:
    from ccs.outbox import open_store

    emus = [emulator() for _ in range(n)]
    gws = Gateways(outbox, emus, connections=connections)
    store = open_store(outbox)
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
    ap.add_argument("--timeout", type=float, default=40.0, help="seconds per setup at most")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()} (gateways, their emulators, Redis and this script share "
          "them)", flush=True)
    g, t = redis_latency()
    print(f"redis-py PING round trip: {g:.0f} us on a gevent socket, {t:.0f} us through "
          "gevent's threadpool", flush=True)
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for name, n, outbox in (("sqlite", 1, str(Path(tmp) / "outbox.sqlite")),
                                ("p1", 1, None), ("p2", 2, None), ("p4", 4, None)):
            prefix = f"bench-{secrets.token_hex(4)}"
            url = outbox or f"{REDIS}?prefix={prefix}"
            try:
                rates[name] = run(n, args.count, url, args.timeout, args.connections)
            finally:
                if outbox is None:
                    cleanup(prefix)
            print(f"{name}: {n} gateway(s), {'SQLite' if outbox else 'Redis'} outbox: "
                  f"{rates[name]:.0f} messages/s", flush=True)
    print(f"result: p1_per_s={rates['p1']:.0f} p2_per_s={rates['p2']:.0f} "
          f"p4_per_s={rates['p4']:.0f} redis_vs_sqlite={rates['p1'] / rates['sqlite']:.2f}")


if __name__ == "__main__":
    main()
