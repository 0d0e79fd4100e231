#!/usr/bin/env python
"""Benchmark: downstream acks/s the CCS emulator sustains in its own process, on loopback.

Starts `ccs emulate ccs` as a subprocess, then drives it from this process with a throw-away
client (pre-serialised stanzas, a 100-message window per connection, acks counted by bytes).
The last line printed is JSON: {"bench": "ccs_emulator", "acks_per_s": ..., ...}.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gevent
from gevent import socket
from gevent.event import Event
from gevent.queue import Queue

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ccs.transport.tls import client_context  # noqa: E402

ACK = b'"message_type":"ack"'
OPEN = (b"<stream:stream to='gcm.googleapis.com' version='1.0' xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams'>")


def recv_until(sock, marker: bytes, buf: bytearray) -> None:
    while marker not in buf:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("emulator closed the connection during login")
        buf += data


def login(info: dict, n: int):
    ctx = client_context(info["ca_file"])
    sock = ctx.wrap_socket(socket.create_connection((info["host"], info["port"])),
                           server_hostname="gcm.googleapis.com")
    buf = bytearray()
    sock.sendall(OPEN)
    recv_until(sock, b"</stream:features>", buf)
    creds = base64.b64encode(
        f"\0{info['sender_id']}@gcm.googleapis.com\0{info['server_key']}".encode())
    sock.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>" + creds
                 + b"</auth>")
    recv_until(sock, b"<success", buf)
    buf.clear()
    sock.sendall(OPEN)
    recv_until(sock, b"</stream:features>", buf)
    sock.sendall(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                 b"<resource>bench%d</resource></bind></iq>" % n)
    recv_until(sock, b"</iq>", buf)
    return sock


def stanza(conn: int, i: int) -> bytes:
    payload = json.dumps({"to": f"token-{i % 1000:04d}-" + "x" * 120,
                          "message_id": f"c{conn}-{i}", "data": {"score": "3x1", "n": str(i)}})
    return (b"<message id=''><gcm xmlns='google:mobile:data'>"
            + payload.replace("&", "&amp;").replace("<", "&lt;").encode() + b"</gcm></message>")


def drive(info: dict, conn: int, total: int, window: int, ready: Queue, go: Event,
          done: list[tuple[int, float, float]]) -> None:
    sock = login(info, conn)
    pre = [stanza(conn, i) for i in range(total)]
    ready.put(conn)
    go.wait()
    began = time.perf_counter()
    sent = min(window, total)
    sock.sendall(b"".join(pre[:sent]))
    acked = 0
    tail = b""
    while acked < total:
        data = sock.recv(262144)
        if not data:
            raise RuntimeError("emulator closed the connection")
        chunk = tail + data
        acked += chunk.count(ACK)  # the tail is too short to hold a whole ACK by itself
        tail = chunk[-(len(ACK) - 1):]
        more = min(total - sent, window - (sent - acked))
        if more > 0:
            sock.sendall(b"".join(pre[sent:sent + more]))
            sent += more
    done.append((acked, began, time.perf_counter()))
    sock.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--messages", type=int, default=40000, help="total downstream messages")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--ack-delay", type=float, default=0.0, help="emulator ack delay (s)")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "ccs", "emulate", "ccs", "--port", "0",
                             "--ack-delay", str(args.ack_delay)],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        info = json.loads(proc.stdout.readline())
        per = args.messages // args.connections
        done: list[tuple[int, float, float]] = []
        go, ready = Event(), Queue()
        jobs = [gevent.spawn(drive, info, n, per, args.window, ready, go, done)
                for n in range(args.connections)]
        for _ in jobs:  # every connection logged in, its stanzas built
            ready.get(timeout=30)
        go.set()
        gevent.joinall(jobs, raise_error=True, timeout=120)
        if len(done) != args.connections:
            raise SystemExit("benchmark did not finish")
        elapsed = max(d[2] for d in done) - min(d[1] for d in done)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    acks = sum(d[0] for d in done)
    print(json.dumps({"bench": "ccs_emulator", "acks_per_s": round(acks / elapsed),
                      "acks": acks, "seconds": round(elapsed, 3),
                      "connections": args.connections, "window": args.window,
                      "ack_delay": args.ack_delay}))


if __name__ == "__main__":
    main()
