#!/usr/bin/env python
"""Benchmark: FCM HTTP v1 senders against one `ccs emulate fcm` (its own process, answering every
request after --latency seconds, a WAN round trip), one after another in one run:

- ours: FcmClient over HTTP/2 (its default);
- h1: FcmClient forced to HTTP/1.1 (--h1-sockets keep-alive connections);
- send_each: firebase-admin's send_each (requests over HTTP/1.1, a thread per message);
- send_each_async: firebase-admin's send_each_async (httpx over HTTP/2);
- ceiling: a minimal HTTP/2 client of this script's own (h2 on --ceiling-sockets sockets, no
  retries, no bookkeeping): what the emulator itself can serve on this machine.

Each runs in a child process of its own, which reports messages/s and its CPU per message. The
last line is `result: ours_per_s=<n> h1_per_s=<n> ceiling_per_s=<n> peer_per_s=<n>
peer_async_per_s=<n> ratio=<ours/send_each> ratio_async=<ours/send_each_async>
ratio_ceiling=<ours/ceiling> ratio_h1=<ours/h1>`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BATCH = 500  # firebase-admin's send_each takes at most 500 messages a call
RUNS = ("ours", "h1", "ceiling", "send_each", "send_each_async")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_cpu(pid: int) -> float:
    """CPU seconds a process has used (Linux /proc), for the emulator's cost per message."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def start_emulator(latency: float, streams: int) -> tuple[subprocess.Popen[str], dict]:
    proc = subprocess.Popen([sys.executable, "-m", "ccs", "emulate", "fcm", "--record-limit", "0",
                             "--latency", str(latency), "--streams", str(streams)],
                            stdout=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("emulator did not start")
    return proc, json.loads(line)


def bodies(count: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield {"token": f"bench-token-{i}", "data": {"i": str(i)},
               "notification": {"title": "bench", "body": f"message {i}"}}


def timed(fn: Callable[[], int]) -> dict[str, float]:
    c0, t0 = cpu(), time.perf_counter()
    ok = fn()
    return {"elapsed": time.perf_counter() - t0, "cpu": cpu() - c0, "ok": ok}


# -- the runs (each in its own process) --------------------------------------------------------

def run_ours(info: dict, count: int, args: argparse.Namespace, http2: bool) -> dict:
    from http_fallback.fcm import FcmClient, FcmConfig, Message

    options: dict[str, Any] = {"concurrency": args.h1_sockets}
    if http2:
        options = {"connections": args.connections} if args.connections else {}
    else:
        options["http2"] = False
    client = FcmClient(FcmConfig(info["credentials"], base_url=info["url"], iid_url=info["url"],
                                 ca_file=info["ca_file"], **options))
    client.send(Message(token="warm-up")).get(30)  # token fetch and a first connection
    result = timed(lambda: sum(1 for o in client.stream(bodies(count)) if o.ok))
    result["protocols"] = sorted({c["protocol"] for c in client.stats().get("connections", [])})
    client.stop()
    return result


def run_ceiling(info: dict, count: int, args: argparse.Namespace) -> dict:
    import gevent

    from ccs.transport.http11 import HttpClient
    from http_fallback.fcm.auth import ServiceAccount, TokenSource

    http = HttpClient(ca_file=info["ca_file"])
    token = TokenSource(ServiceAccount.load(info["credentials"]), http).get()
    path = f"/v1/projects/{info['project']}/messages:send"
    source = (json.dumps({"message": m, "validate_only": False}).encode()
              for m in bodies(count))
    conns = [MiniH2(info, path, token, source) for _ in range(args.ceiling_sockets)]

    def go() -> int:
        gevent.joinall([gevent.spawn(c.run) for c in conns], raise_error=True)
        return sum(c.ok for c in conns)

    return timed(go)


class MiniH2:
    """As little HTTP/2 client as can send FCM requests: fill the stream limit, count 200s."""

    def __init__(self, info: dict, path: str, token: str, source: Iterator[bytes]) -> None:
        self.info, self.source, self.ok = info, source, 0
        self.headers = [(b":method", b"POST"), (b":scheme", b"https"),
                        (b":authority", f"127.0.0.1:{info['port']}".encode()),
                        (b":path", path.encode()), (b"authorization", f"Bearer {token}".encode()),
                        (b"content-type", b"application/json; charset=UTF-8")]

    def run(self) -> None:
        import gevent
        from gevent import socket
        from gevent.event import Event
        from gevent.lock import Semaphore
        from h2 import events as ev
        from h2.config import H2Configuration
        from h2.connection import H2Connection

        from ccs.transport.h2conn import _PlainEncoder as PlainEncoder
        from ccs.transport.tls import client_context

        ctx = client_context(self.info["ca_file"], alpn=["h2"])
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.info["port"])),
                               server_hostname="127.0.0.1")
        # h2 as lean as it goes: no outbound header checks, no Huffman coding
        conn = H2Connection(H2Configuration(client_side=True, header_encoding=None,
                                            validate_outbound_headers=False,
                                            normalize_outbound_headers=False))
        conn.encoder = PlainEncoder()
        conn.initiate_connection()
        lock, free, state = Semaphore(), Event(), {"open": 0, "done": False}
        sock.sendall(conn.data_to_send())

        def read() -> None:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                with lock:
                    for e in conn.receive_data(data):
                        if type(e) is ev.ResponseReceived and e.headers[0][1] == b"200":
                            self.ok += 1
                        elif type(e) is ev.DataReceived:
                            conn.acknowledge_received_data(e.flow_controlled_length,
                                                           e.stream_id)
                        elif type(e) is ev.StreamEnded:
                            state["open"] -= 1
                            free.set()
                        elif type(e) in (ev.WindowUpdated, ev.RemoteSettingsChanged):
                            free.set()
                    sock.sendall(conn.data_to_send())

        reader = gevent.spawn(read)
        free.wait()  # the server's SETTINGS first
        while True:
            room = conn.remote_settings.max_concurrent_streams - state["open"]
            if state["done"] and state["open"] == 0:
                break
            if room <= 0 or state["done"] or conn.outbound_flow_control_window < 1024:
                free.clear()
                free.wait()
                continue
            with lock:
                for _ in range(room):
                    if conn.outbound_flow_control_window < 1024:
                        break  # the reader wakes us when the server opens the window
                    body = next(self.source, None)
                    if body is None:
                        state["done"] = True
                        break
                    sid = conn.get_next_available_stream_id()
                    conn.send_headers(sid, self.headers)
                    conn.send_data(sid, body, end_stream=True)
                    state["open"] += 1
                sock.sendall(conn.data_to_send())
        reader.kill()
        sock.close()


def peer_app(info: dict) -> Any:
    os.environ["REQUESTS_CA_BUNDLE"] = info["ca_file"]
    os.environ["SSL_CERT_FILE"] = info["ca_file"]
    import firebase_admin
    from firebase_admin import credentials, messaging

    app = firebase_admin.initialize_app(credentials.Certificate(info["credentials"]),
                                        name="bench")
    messaging._get_messaging_service(app)._fcm_url = (
        f"{info['url']}/v1/projects/{info['project']}/messages:send")
    return app


def peer_batches(count: int) -> Iterator[list[Any]]:
    from firebase_admin import messaging

    batch = []
    for m in bodies(count):
        batch.append(messaging.Message(token=m["token"], data=m["data"],
                                       notification=messaging.Notification(
                                           **m["notification"])))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def run_send_each(info: dict, count: int) -> dict:
    from firebase_admin import messaging

    app = peer_app(info)
    messaging.send(messaging.Message(token="warm-up"), app=app)
    return timed(lambda: sum(messaging.send_each(b, app=app).success_count
                             for b in peer_batches(count)))


def run_send_each_async(info: dict, count: int) -> dict:
    import asyncio

    from firebase_admin import messaging

    app = peer_app(info)

    async def go() -> dict:
        await messaging.send_each_async([messaging.Message(token="warm-up")], app=app)
        c0, t0 = cpu(), time.perf_counter()
        ok = 0
        for batch in peer_batches(count):
            ok += (await messaging.send_each_async(batch, app=app)).success_count
        return {"elapsed": time.perf_counter() - t0, "cpu": cpu() - c0, "ok": ok}

    return asyncio.run(go())


def child(name: str, info: dict, count: int, args: argparse.Namespace) -> None:
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    if name in ("ours", "h1"):
        result = run_ours(info, count, args, http2=name == "ours")
    elif name == "ceiling":
        result = run_ceiling(info, count, args)
    elif name == "send_each":
        result = run_send_each(info, count)
    else:
        result = run_send_each_async(info, count)
    print(json.dumps(result), flush=True)


# -- the parent ---------------------------------------------------------------------------------

LABELS = {"ours": "ours (FcmClient, HTTP/2)", "h1": "ours (FcmClient, HTTP/1.1)",
          "ceiling": "ceiling (minimal h2 client)", "send_each": "firebase-admin send_each",
          "send_each_async": "firebase-admin send_each_async (HTTP/2)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="messages per client")
    parser.add_argument("--latency", type=float, default=0.05, help="emulator answer latency (s)")
    parser.add_argument("--streams", type=int, default=100,
                        help="the emulator's SETTINGS_MAX_CONCURRENT_STREAMS")
    parser.add_argument("--connections", type=int, default=None,
                        help="our HTTP/2 connections (default: FcmClient's)")
    parser.add_argument("--h1-sockets", type=int, default=100,
                        help="our HTTP/1.1 connections when forced to HTTP/1.1")
    parser.add_argument("--ceiling-sockets", type=int, default=8)
    parser.add_argument("--only", default=",".join(RUNS), help="which runs, comma-separated")
    parser.add_argument("--child", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--info", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, json.loads(args.info), args.count, args)
        return
    runs = [r for r in args.only.split(",") if r]
    proc, info = start_emulator(args.latency, args.streams)
    results: dict[str, dict] = {}
    try:
        for name in runs:
            argv = [sys.executable, __file__, "--child", name, "--info", json.dumps(info),
                    "--count", str(args.count), "--h1-sockets", str(args.h1_sockets),
                    "--ceiling-sockets", str(args.ceiling_sockets)]
            if args.connections:
                argv += ["--connections", str(args.connections)]
            emu0 = proc_cpu(proc.pid)
            out = subprocess.run(argv, capture_output=True, text=True, env=env(), cwd=ROOT)
            emu_cpu = proc_cpu(proc.pid) - emu0
            if out.returncode != 0:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[name]
            if r["ok"] != args.count:
                raise SystemExit(f"{name}: only {r['ok']} of {args.count} accepted")
            rate = args.count / r["elapsed"]
            extra = f" over {', '.join(r['protocols'])}" if r.get("protocols") else ""
            print(f"{LABELS[name]}: {args.count} messages in {r['elapsed']:.2f} s = {rate:.0f} "
                  f"msg/s, client CPU {r['cpu'] * 1e6 / args.count:.0f} us/message{extra} "
                  f"(emulator CPU {emu_cpu * 1e6 / args.count:.0f} us/message)",
                  flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
    rate = {n: args.count / r["elapsed"] for n, r in results.items()}

    def ratio(name: str) -> str:
        return f"{rate['ours'] / rate[name]:.2f}" if "ours" in rate and name in rate else "nan"

    def per_s(name: str) -> str:
        return f"{rate[name]:.0f}" if name in rate else "nan"

    print(f"result: ours_per_s={per_s('ours')} h1_per_s={per_s('h1')} "
          f"ceiling_per_s={per_s('ceiling')} peer_per_s={per_s('send_each')} "
          f"peer_async_per_s={per_s('send_each_async')} ratio={ratio('send_each')} "
          f"ratio_async={ratio('send_each_async')} ratio_ceiling={ratio('ceiling')} "
          f"ratio_h1={ratio('h1')}")


if __name__ == "__main__":
    main()
