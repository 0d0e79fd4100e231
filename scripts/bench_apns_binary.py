"""Benchmark: the APNs binary client against a hostile binary gateway in its own process.

Runs, each against a fresh gateway process (tests/hostile_binary.py, TLS with client
certificates, loopback):
- raw: a bare TLS writer of pre-encoded command-2 frames, no bookkeeping (the ceiling);
- ours: BinaryClient, the same count, no errors;
  both end with one invalid token, whose error response confirms everything before it, so
  the clock stops when the gateway has processed all of them;
- gateway-500, gateway-5000: the whole gateway (SQLite outbox) on an apns-binary lane with
  CCS_PROVIDER_CONCURRENCY 500 (default) and 5000: each message holds a slot until its outcome,
  which on clean traffic is the quiet period;
- burst: the issue's run: half command 2 then half command 1, every 50th token invalid
  (error 8 and close), Shutdown (10) after every 250 accepted. Outcomes are counted against
  what the gateway accepted.
Usage: scripts/bench_apns_binary.py [-n 20000] [--burst 1000] [--gateway 3000] [--cache N]
                                    [--wait S] [--quiet S]
Last line: result: raw_per_s=<n> ours_per_s=<n> burst_per_s=<n> burst_lost=<n>
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tok(i: int) -> str:
    return f"{i:064x}"


PROBE = "ff" * 32  # the invalid token that ends a timed run


def serve(args: argparse.Namespace) -> None:
    """Child: run the gateway until stdin closes, then print what it processed."""
    from gevent import os as gos

    from ccs.testing.pki import make_test_pki
    from tests.hostile_binary import HostileBinary

    pki = make_test_pki(args.pki)
    bad = {PROBE: 8}
    if args.bad_every:
        bad.update({tok(i): 8 for i in range(args.bad_every, args.count + 1, args.bad_every)})
    with HostileBinary(pki, reject=bad, shutdown_every=args.shutdown_every) as server:
        print(json.dumps({"port": server.port}), flush=True)
        fd = sys.stdin.fileno()
        gos.make_nonblocking(fd)
        while gos.nb_read(fd, 1024):
            pass
        accepted = Counter(server.accepted())
        print(json.dumps({"accepted": sum(accepted.values()), "distinct": len(accepted),
                          "connections": server.connections,
                          "rejected": sum(1 for s in server.seen if s.status)}), flush=True)


class Gateway:
    def __init__(self, pki_dir: str, count: int, bad_every: int = 0,
                 shutdown_every: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--pki", pki_dir, "-n", str(count),
             "--bad-every", str(bad_every), "--shutdown-every", str(shutdown_every)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = json.loads(self.proc.stdout.readline())["port"]  # type: ignore[union-attr]

    def finish(self) -> dict:
        out, _ = self.proc.communicate(timeout=60)
        return json.loads(out.strip().splitlines()[-1])


def context(pki_dir: str):
    from http_fallback.apns.auth import certificate_context

    p = Path(pki_dir)
    return certificate_context(ca_file=str(p / "ca.pem"), cert_file=str(p / "client.pem"),
                               key_file=str(p / "client.key"))


def payload(i: int) -> bytes:
    return json.dumps({"aps": {"alert": f"notification {i}", "badge": 1}}).encode()


def run_raw(pki_dir: str, count: int) -> dict:
    from ccs.transport.h2conn import open_tls
    from http_fallback.apns.binary.frames import encode_frame, parse_error

    gw = Gateway(pki_dir, count)
    frames = [encode_frame(i + 1, 0, tok(i), payload(i)) for i in range(count)]
    frames.append(encode_frame(count + 1, 0, PROBE, payload(0)))
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    sock = open_tls("127.0.0.1", gw.port, context(pki_dir), None, 10, alpn=None)
    for at in range(0, len(frames), 64):
        sock.sendall(b"".join(frames[at:at + 64]))
    answer = b""
    while len(answer) < 6:
        answer += sock.recv(6)
    elapsed = time.perf_counter() - t0
    cpu = _cpu(r0)
    sock.close()
    assert parse_error(answer) == (8, count + 1), answer
    return {"elapsed": elapsed, "cpu": cpu, **gw.finish()}


def run_ours(pki_dir: str, count: int, bad_every: int = 0, shutdown_every: int = 0,
             probe: bool = True, **kw: float) -> dict:
    from http_fallback.apns.binary.client import BinaryClient
    from http_fallback.apns.model import Notification

    gw = Gateway(pki_dir, count, bad_every, shutdown_every)
    client = BinaryClient("127.0.0.1", gw.port, context(pki_dir), reconnect_base=0.01, **kw)
    client.start()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    results = []
    for i in range(1, count + 1):
        if bad_every and i == count // 2 + 1:
            client.command = 1  # the second half in the enhanced format
        results.append(client.send(Notification(device=tok(i), alert=f"notification {i}",
                                                badge=1)))
    if probe:
        results.append(client.send(Notification(device=PROBE, alert="end")))
    outs = [r.get(300) for r in results]
    elapsed = time.perf_counter() - t0
    cpu = _cpu(r0)
    client.stop(timeout=1)
    statuses = Counter(str(o.status) for o in outs[:count])
    served = gw.finish()
    bad = {tok(i) for i in range(bad_every, count + 1, bad_every)} if bad_every else set()
    lost = sum(1 for i, o in enumerate(outs[:count], 1) if not o.ok and tok(i) not in bad)
    return {"elapsed": elapsed, "cpu": cpu, "outcomes": dict(statuses), "lost": lost,
            "confirmed": client.counts["confirmed"], "quiet": client.counts["quiet"],
            "resent": client.counts["resent"], "late_errors": client.counts["late_errors"],
            **served}


def run_gateway(pki_dir: str, count: int, concurrency: int) -> dict:
    """The whole gateway: enqueue `count` on an apns-binary lane, wait for every outcome."""
    from ccs.gateway.settings import Settings
    from ccs.gateway.supervisor import Supervisor

    gw = Gateway(pki_dir, count)
    p = Path(pki_dir)
    settings = Settings.defaults().replace(
        admin__enabled=False, gateway__providers=["apns-binary"], ccs__ca_file=str(p / "ca.pem"),
        apns__legacy_host="127.0.0.1", apns__legacy_port=gw.port,
        apns__cert=str(p / "client.pem"), apns__cert_key=str(p / "client.key"),
        outbox__path=str(p.parent / f"outbox-{concurrency}.sqlite"),
        gateway__concurrency=concurrency)
    sup = Supervisor(settings).start()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    ids = sup.enqueue_many([{"to": tok(i), "alert": f"notification {i}", "badge": 1}
                            for i in range(1, count + 1)], via="apns-binary")
    outs = [sup.result(i).get(timeout=300) for i in ids]
    elapsed = time.perf_counter() - t0
    cpu = _cpu(r0)
    sup.stop()
    return {"elapsed": elapsed, "cpu": cpu, "concurrency": concurrency,
            "outcomes": dict(Counter(str(o.status) for o in outs)), **gw.finish()}


def _cpu(r0) -> float:
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", "--count", type=int, default=20000)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--cache", type=int, default=None, help="cache_length (client default)")
    ap.add_argument("--wait", type=float, default=None, help="cache_wait (client default)")
    ap.add_argument("--quiet", type=float, default=None, help="quiet_period (client default)")
    ap.add_argument("--gateway", type=int, default=3000,
                    help="notifications through the whole gateway (0: skip)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pki", help=argparse.SUPPRESS)
    ap.add_argument("--bad-every", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--shutdown-every", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        pki_dir = os.path.join(tmp, "pki")
        from ccs.testing.pki import make_test_pki

        make_test_pki(pki_dir)
        n = args.count
        kw = {k: v for k, v in (("cache_length", args.cache), ("cache_wait", args.wait),
                                ("quiet_period", args.quiet)) if v is not None}
        raw = run_raw(pki_dir, n)
        ours = run_ours(pki_dir, n, **kw)
        burst = run_ours(pki_dir, args.burst, bad_every=50, shutdown_every=250, probe=False,
                         **kw)
        runs = [("raw", raw, n), ("ours", ours, n), ("burst", burst, args.burst)]
        if args.gateway:
            for conc in (500, 5000):
                runs.append((f"gateway-{conc}", run_gateway(pki_dir, args.gateway, conc),
                             args.gateway))
    for name, r, count in runs:
        r["per_s"] = round(count / r["elapsed"])
        r["cpu_us_per_msg"] = round(r["cpu"] / count * 1e6, 1)
        print(name, json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                for k, v in r.items()}))
    print(f"result: raw_per_s={raw['per_s']} ours_per_s={ours['per_s']} "
          f"burst_per_s={burst['per_s']} burst_lost={burst['lost']}")


if __name__ == "__main__":
    main()
