"""Benchmark: our APNs client against aioapns, both sending to `ccs emulate apns` on loopback.

The emulator, our client and aioapns each run in their own process; each client measures its
own wall time and CPU (getrusage) over the timed run; the clients take turns (--rounds) and
each one's best run is reported. Last line:
    result: ours_per_s=<n> peer_per_s=<n> ratio=<x>
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


def ours(spec: dict) -> dict:
    from gevent.event import Event

    from http_fallback.apns.client import ApnsClient
    from http_fallback.apns.config import ApnsConfig
    from http_fallback.apns.model import Notification

    cfg = ApnsConfig(host=spec["host"], port=spec["port"], ca_file=spec["ca_file"],
                     key_file=spec["key_file"], key_id=spec["key_id"], team_id=spec["team_id"],
                     topic=spec["topic"], connections=spec.get("connections", 1),
                     request_timeout=120)
    token = "ab" * 32
    count, conc = spec["count"], spec.get("concurrency", 1000)
    with ApnsClient(cfg) as client:
        assert client.send(Notification(device=token, alert="warm", badge=1)).get(30).ok
        done = Event()
        state = {"next": 0, "finished": 0, "ok": 0}

        def fire() -> None:
            i = state["next"]
            state["next"] += 1
            client.send(Notification(device=token, alert=f"ours {i}", badge=1)).add_callback(
                finished)

        def finished(outcome) -> None:
            state["finished"] += 1
            state["ok"] += outcome.ok
            if state["next"] < count:
                fire()
            if state["finished"] == count:
                done.set()

        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        for _ in range(min(conc, count)):
            fire()
        done.wait()
        elapsed = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"count": count, "ok": state["ok"], "seconds": elapsed, "cpu": cpu}


def run_worker(args: list[str], spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, *args, json.dumps(spec)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    if out.returncode:
        sys.exit(f"worker {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--count", type=int, default=20_000)
    ap.add_argument("-c", "--concurrency", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate the clients this many times; keep each one's best run")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(ours(json.loads(a.worker))), flush=True)
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    emu = subprocess.Popen([sys.executable, "-m", "ccs", "emulate", "apns", "--no-record"],
                           stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        info = json.loads(emu.stdout.readline())
        spec = {**info, "count": a.count, "concurrency": a.concurrency,
                "connections": a.connections}
        runs: dict[str, list[dict]] = {"ours": [], "peer": []}
        for _ in range(max(1, a.rounds)):  # alternate, so load from elsewhere hits both
            runs["ours"].append(run_worker([str(Path(__file__).resolve()), "--worker"], spec))
            runs["peer"].append(run_worker([str(ROOT / "scripts" / "aioapns_peer.py")], spec))
        mine = min(runs["ours"], key=lambda r: r["seconds"])
        peer = min(runs["peer"], key=lambda r: r["seconds"])
    finally:
        emu.terminate()
        emu.wait(10)
    for name, r in (("ours (gevent + h2)", mine), ("aioapns (asyncio)", peer)):
        print(f"{name:20s} {r['count']} sent, {r['ok']} ok in {r['seconds']:.2f} s: "
              f"{r['count'] / r['seconds']:.0f}/s, "
              f"CPU {1e6 * r['cpu'] / r['count']:.0f} us/notification")
    ours_ps = mine["count"] / mine["seconds"]
    peer_ps = peer["count"] / peer["seconds"]
    print(f"result: ours_per_s={ours_ps:.0f} peer_per_s={peer_ps:.0f} "
          f"ratio={ours_ps / peer_ps:.2f}")


if __name__ == "__main__":
    main()
