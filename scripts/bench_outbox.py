#!/usr/bin/env python3
"""Gateway throughput with the durable SQLite outbox vs the in-memory store, in one run.

Each run: a Supervisor with the real CcsClient against the CCS emulator (own process), PRODUCERS
greenlets enqueue COUNT messages one call each (like API callers), and the clock stops when
every message has its outcome recorded in the store. SQLite runs both ways: transactions in
the hub (the default) and in gevent's threadpool. Rounds alternate the three; the best of each
counts (this machine is shared). Loopback only; bounded by --count. The last line is
`result: durable_per_s=<n> memory_per_s=<n> ratio=<x>` (durable: the outbox's default mode).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENDER, KEY = "1234567890", "bench-server-key"


def start_emulator() -> tuple[subprocess.Popen[str], dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccs", "emulate", "ccs", "--sender-id", SENDER,
         "--server-key", KEY], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def run(info: dict, store_kind: str, count: int, producers: int, connections: int,
        concurrency: int = 500) -> float:
    import gevent

    from ccs.gateway.outbox import MemoryStore
    from ccs.gateway.outbox.sqlite import SqliteStore
    from ccs.gateway.settings import Settings
    from ccs.gateway.supervisor import Supervisor

    tmp = tempfile.mkdtemp(prefix="bench-outbox-")
    settings = Settings.defaults().replace(
        admin__enabled=False, ccs__host=info["host"], ccs__port=info["port"],
        ccs__sender_id=SENDER, ccs__server_key=KEY, ccs__ca_file=info["ca_file"],
        ccs__connections=connections, gateway__concurrency=concurrency)
    if store_kind == "memory":
        store = MemoryStore()
    else:
        store = SqliteStore(os.path.join(tmp, "bench.sqlite"),
                            threadpool=store_kind == "sqlite-threadpool")  # else the hub
    sup = Supervisor(settings, store=store).start()
    ccs = sup.providers["ccs"]
    if not ccs.wait_ready(15):  # type: ignore[attr-defined]
        raise SystemExit("bench: the CCS client could not log in to the emulator")
    done = gevent.event.Event()
    finished = [0]

    def on_outcome(_: object) -> None:
        finished[0] += 1
        if finished[0] == count:
            done.set()

    sup.dispatcher.outcomes.add(on_outcome)  # type: ignore[union-attr]
    per = count // producers

    def produce(k: int) -> None:
        for i in range(per):
            sup.enqueue({"to": f"tok-{k}-{i}", "data": {"n": str(i)}})

    started = time.perf_counter()
    cpu0 = time.process_time()
    gevent.joinall([gevent.spawn(produce, k) for k in range(producers)], raise_error=True)
    accepted = time.perf_counter() - started
    if not done.wait(timeout=120):
        raise SystemExit(f"bench: only {finished[0]} of {count} outcomes")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    counts = store.counts()
    assert counts["ok"] == count, counts
    commits = getattr(store, "commits", 0)
    ops = getattr(store, "ops", 0)
    sup.stop()
    store.close()
    rate = count / elapsed
    group = f"; {ops / commits:.1f} operations per commit" if commits else ""
    print(f"{store_kind:18s} {count} messages in {elapsed:.2f}s: {rate:,.0f}/s, "
          f"{cpu / count * 1e6:.0f} us CPU each (all accepted after {accepted:.2f}s{group})",
          flush=True)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--producers", type=int, default=500,
                    help="concurrent callers, one message per call (like API handlers)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds; best of each")
    args = ap.parse_args()
    args.count -= args.count % args.producers
    emu, info = start_emulator()
    best: dict[str, float] = {}
    try:
        for _ in range(args.rounds):
            for kind in ("memory", "sqlite-hub", "sqlite-threadpool"):
                rate = run(info, kind, args.count, args.producers, args.connections)
                best[kind] = max(best.get(kind, 0.0), rate)
    finally:
        emu.terminate()
        emu.wait(timeout=10)
    print(f"sqlite in the hub: {best['sqlite-hub']:.0f}/s; in the threadpool: "
          f"{best['sqlite-threadpool']:.0f}/s (threadpool/hub = "
          f"{best['sqlite-threadpool'] / best['sqlite-hub']:.2f})")
    durable, memory = best["sqlite-hub"], best["memory"]
    print(f"result: durable_per_s={durable:.0f} memory_per_s={memory:.0f} "
          f"ratio={durable / memory:.2f}")


if __name__ == "__main__":
    main()
