#!/usr/bin/env python3
"""Send-to-ack throughput and client CPU of CcsClient through the CCS emulator (own process).

Run 1 (no ack delay): messages per second and client CPU microseconds per message.
Run 2 (ack delay D): efficiency = throughput / (connections x 100 / D), the window bound.
Peer (same run, same emulator): plain slixmpp on asyncio, one connection, window 100.
Loopback only; bounded by --count. Last line is machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENDER, KEY = "1234567890", "bench-server-key"


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_emulator(ack_delay: float) -> tuple[subprocess.Popen[str], dict]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccs", "emulate", "ccs", "--sender-id", SENDER,
         "--server-key", KEY, "--ack-delay", str(ack_delay)],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, info


def run_ours(info: dict, count: int, connections: int) -> tuple[float, float]:
    import gevent

    from ccs.xmpp.client import CcsClient, CcsConfig
    from ccs.xmpp.message import build_message

    client = CcsClient(CcsConfig(sender_id=SENDER, server_key=KEY, host=info["host"],
                                 port=info["port"], ca_file=info["ca_file"],
                                 connections=connections))
    client.start()
    if not client.wait_ready(15):
        raise SystemExit("bench: client could not log in to the emulator")
    # Wait for every session, so the window bound is the configured one.
    deadline = time.monotonic() + 15
    while sum(s["state"] == "ready" for s in client.stats()["sessions"]) < connections:
        if time.monotonic() > deadline:
            raise SystemExit("bench: not every session logged in")
        gevent.sleep(0.01)
    data = {"text": "x" * 120, "kind": "bench"}
    messages = [build_message(f"token-{i % 1000:04d}-" + "a" * 140, data=data)
                for i in range(count)]
    c0, t0 = cpu(), time.perf_counter()
    results = []
    for i, m in enumerate(messages):
        results.append(client.send(m))
        if i % 100 == 99:
            gevent.sleep(0)  # a producer that lets the hub run, as any gevent app does
    outcomes = [r.get(timeout=120) for r in results]
    elapsed, used = time.perf_counter() - t0, cpu() - c0
    client.stop(5)
    bad = sum(not o.ok for o in outcomes)
    if bad:
        raise SystemExit(f"bench: {bad} messages did not end ok")
    return count / elapsed, used / count * 1e6


def run_peer(info: dict, count: int) -> tuple[float, float]:
    """slixmpp's own client on asyncio: the stack this project measured against."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "peer_slixmpp_ccs.py"),
                          info["host"], str(info["port"]),
                          info["ca_file"], SENDER, KEY, str(count)],
                         capture_output=True, text=True, timeout=300)
    if out.returncode:
        raise SystemExit(f"bench: peer failed: {out.stderr[-2000:]}")
    rate, us = out.stdout.split()
    return float(rate), float(us)




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--ack-delay", type=float, default=0.05)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()

    proc, info = start_emulator(0.0)
    try:
        run_ours(info, min(2000, args.count), args.connections)  # warm-up
        rate, us = run_ours(info, args.count, args.connections)
        print(f"ours, no ack delay: {rate:,.0f} msgs/s, {us:.1f} us CPU per message "
              f"({args.connections} connections)")
        if not args.no_peer:
            prate, pus = run_peer(info, args.count)
            print(f"peer slixmpp on asyncio, 1 connection: {prate:,.0f} msgs/s, "
                  f"{pus:.1f} us CPU per message")
    finally:
        proc.terminate()
        proc.wait(10)

    proc, info = start_emulator(args.ack_delay)
    try:
        bound = args.connections * 100 / args.ack_delay
        n = max(args.count, int(bound * 2))
        drate, _ = run_ours(info, n, args.connections)
        eff = drate / bound
        print(f"ours, ack delay {args.ack_delay * 1000:.0f} ms: {drate:,.0f} msgs/s of a "
              f"{bound:,.0f} msgs/s window bound: efficiency {eff:.3f}")
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"result: msgs_per_s={rate:.0f} cpu_us_per_msg={us:.1f} efficiency={eff:.3f}")


if __name__ == "__main__":
    main()
