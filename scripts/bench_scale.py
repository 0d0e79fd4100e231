#!/usr/bin/env python3
"""Throughput of 1, 2 and 4 `ccs run` processes sharing one Redis outbox, and of one gateway on
Redis against one on SQLite, in one run.

Each gateway process has its own CCS emulator process (its own connections). For each setup
the gateways start first; the clock runs from the moment --count messages are enqueued until
the outbox records an outcome for every one; the best of --rounds counts. Loopback only;
bounded by --count, --rounds and --timeout (default run: about a minute).
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
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per setup at most")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; the best of each counts")
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()} (gateways, their emulators, Redis and this script share "
          "them)", flush=True)
    g, t = redis_latency()
    print(f"redis-py PING round trip: {g:.0f} us on a gevent socket, {t:.0f} us through "
          "gevent's threadpool", flush=True)
    rates: dict[str, float] = {}
    setups = (("sqlite", 1, True), ("p1", 1, False), ("p2", 2, False), ("p4", 4, False))
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for round_ in range(args.rounds):  # best of the rounds: this machine is shared
            for name, n, sqlite in setups:
                prefix = f"bench-{secrets.token_hex(4)}"
                url = str(Path(tmp) / f"outbox{round_}.sqlite") if sqlite \
                    else f"{REDIS}?prefix={prefix}"
                try:
                    rate = run(n, args.count, url, args.timeout, args.connections)
                finally:
                    if not sqlite:
                        cleanup(prefix)
                rates[name] = max(rates.get(name, 0.0), rate)
                print(f"round {round_ + 1} {name}: {n} gateway(s), "
                      f"{'SQLite' if sqlite else 'Redis'} outbox: {rate:.0f} messages/s",
                      flush=True)
    print(f"result: p1_per_s={rates['p1']:.0f} p2_per_s={rates['p2']:.0f} "
          f"p4_per_s={rates['p4']:.0f} redis_vs_sqlite={rates['p1'] / rates['sqlite']:.2f}")


if __name__ == "__main__":
    main()
