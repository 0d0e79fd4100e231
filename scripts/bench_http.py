#!/usr/bin/env python
"""Benchmark: FCM HTTP v1 sends through our FcmClient and through firebase-admin's send_each,
both against one `ccs emulate fcm` running in its own process on loopback.

Prints messages/s and client CPU per message for each, then the ratio; the last line is
`result: ours_per_s=<n> peer_per_s=<n> ratio=<x>`.
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


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_emulator() -> tuple[subprocess.Popen[str], dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "ccs", "emulate", "fcm", "--record-limit", "0"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("emulator did not start")
    return proc, json.loads(line)


def run_ours(info: dict, count: int, concurrency: int) -> tuple[float, float, int]:
    from http_fallback.fcm import FcmClient, FcmConfig, Message, Notification

    client = FcmClient(FcmConfig(info["credentials"], base_url=info["url"],
                                 iid_url=info["url"], ca_file=info["ca_file"],
                                 concurrency=concurrency))
    client.send(Message(token="warm-up")).get(30)  # token fetch and first connection
    messages = (Message(token=f"bench-token-{i}", data={"i": str(i)},
                        notification=Notification(title="bench", body=f"message {i}"))
                for i in range(count))
    c0, t0 = cpu(), time.perf_counter()
    ok = sum(1 for outcome in client.stream(messages) if outcome.ok)
    elapsed, used = time.perf_counter() - t0, cpu() - c0
    client.stop()
    return elapsed, used, ok


def run_peer(info: dict, count: int) -> tuple[float, float, int]:
    os.environ["REQUESTS_CA_BUNDLE"] = info["ca_file"]
    os.environ["SSL_CERT_FILE"] = info["ca_file"]
    import firebase_admin
    from firebase_admin import credentials, messaging

    app = firebase_admin.initialize_app(credentials.Certificate(info["credentials"]),
                                        name="bench")
    messaging._get_messaging_service(app)._fcm_url = (
        f"{info['url']}/v1/projects/{info['project']}/messages:send")
    messaging.send(messaging.Message(token="warm-up"), app=app)
    c0, t0 = cpu(), time.perf_counter()
    ok = 0
    for start in range(0, count, 500):
        batch = [messaging.Message(token=f"bench-token-{i}", data={"i": str(i)},
                                   notification=messaging.Notification(title="bench",
                                                                       body=f"message {i}"))
                 for i in range(start, min(count, start + 500))]
        ok += messaging.send_each(batch, app=app).success_count
    elapsed, used = time.perf_counter() - t0, cpu() - c0
    return elapsed, used, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="messages per client")
    parser.add_argument("--concurrency", type=int, default=64, help="our requests in flight")
    args = parser.parse_args()
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    proc, info = start_emulator()
    try:
        ours = run_ours(info, args.count, args.concurrency)
        peer = run_peer(info, args.count)
    finally:
        proc.terminate()
        proc.wait(10)
    rates = {}
    for label, (elapsed, used, ok) in (("ours (FcmClient)", ours),
                                       ("peer (firebase-admin send_each)", peer)):
        if ok != args.count:
            raise SystemExit(f"{label}: only {ok} of {args.count} accepted")
        rates[label] = args.count / elapsed
        print(f"{label}: {args.count} messages in {elapsed:.2f} s = {rates[label]:.0f} msg/s, "
              f"client CPU {used * 1e6 / args.count:.0f} us/message")
    ours_rate, peer_rate = rates.values()
    print(f"result: ours_per_s={ours_rate:.0f} peer_per_s={peer_rate:.0f} "
          f"ratio={ours_rate / peer_rate:.2f}")


if __name__ == "__main__":
    main()
