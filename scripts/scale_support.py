"""Shared by bench_scale.py and soak.py: emulator and `ccs run` processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
from gevent import subprocess  # waits yield: emulators in this process keep serving

ROOT = Path(__file__).resolve().parents[1]
REDIS = os.environ.get("CCS_BENCH_REDIS", "redis://127.0.0.1:6379/0")
SENDER, KEY = "1234567890", "scale-server-key"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCS_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def emulator(*options: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """A `ccs emulate ccs` process and its JSON line (host, port, ca_file)."""
    proc = subprocess.Popen([sys.executable, "-m", "ccs", "emulate", "ccs", "--sender-id",
                             SENDER, "--server-key", KEY, *options], stdout=subprocess.PIPE,
                            text=True, env=_env(), cwd=ROOT)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def gateway_env(outbox: str, ccs: dict[str, Any], connections: int = 2,
                **extra: str) -> dict[str, str]:
    return {"CCS_OUTBOX": outbox, "CCS_ADMIN_ENABLED": "0", "CCS_HOST": ccs["host"],
            "CCS_PORT": str(ccs["port"]), "CCS_SENDER_ID": SENDER, "CCS_SERVER_KEY": KEY,
            "CCS_CA_FILE": ccs["ca_file"], "CCS_CONNECTIONS": str(connections),
            "CCS_FALLBACK_PROVIDER": "", "CCS_OUTBOX_RECLAIM_IDLE": "2.0",
            "CCS_OUTBOX_HEARTBEAT": "0.5", **extra}


class Gateways:
    """N `ccs run` processes, gateway i talking to emulator i % len(emulators)."""

    def __init__(self, outbox: str, emulators: list[tuple[Any, dict[str, Any]]],
                 connections: int = 2, count: int | None = None, **extra: str) -> None:
        self.outbox = outbox
        self.envs = [gateway_env(outbox, info, connections, **extra)
                     for _, info in emulators]
        self.count = count or len(emulators)
        self.procs: list[Any] = [None] * self.count
        self.logs: list[Any] = []
        self.started = 0

    def start(self, i: int) -> None:
        log = open(os.devnull, "wb")  # noqa: SIM115 (closed with the process)
        self.procs[i] = subprocess.Popen([sys.executable, "-m", "ccs", "run"],
                                         env=_env(self.envs[i % len(self.envs)]), cwd=ROOT,
                                         stdout=log, stderr=log)
        self.logs.append(log)
        self.started += 1

    def start_all(self) -> None:
        for i in range(self.count):
            self.start(i)

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            p.send_signal(signal.SIGKILL)
            p.wait()
            self.procs[i] = None

    def wait_ready(self, store: Any, timeout: float) -> None:
        """Until every process is a live gateway with a ready CCS session (Redis outboxes)."""
        deadline = time.monotonic() + timeout
        if not hasattr(store, "gateways"):  # SQLite: no presence; wait for the first session
            gevent.sleep(2.0)
            return
        while True:
            gws = store.gateways()
            if len(gws) >= self.count and all(
                    any(s["state"] == "ready" for s in g.get("sessions", [])) for g in gws):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"gateways not ready after {timeout}s: {gws}")
            gevent.sleep(0.05)

    def rss_kb(self) -> int:
        """Resident memory of the gateway processes, in kB (Linux /proc)."""
        total = 0
        for p in self.procs:
            if p is None:
                continue
            try:
                for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for i, p in enumerate(self.procs):
            if p is not None:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                self.procs[i] = None
        for log in self.logs:
            log.close()


def make_messages(count: int, chunk: int, lane: str = "fcm", prefix: str = "m"
                  ) -> Iterator[list[Any]]:
    from ccs.gateway.dispatcher import Dispatcher

    now = time.time()
    for start in range(0, count, chunk):
        yield [Dispatcher._new({"to": f"tok{i}", "message_id": f"{prefix}{i:07d}",
                                "data": {"i": str(i)}}, lane, now, i)
               for i in range(start, min(count, start + chunk))]


def cleanup(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS)
    keys = list(r.scan_iter(match=f"{{{prefix}*", count=1000))  # {P}:... and {P:N}:...
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i:i + 1000])
    r.close()


def redis_latency(n: int = 5000) -> tuple[float, float]:
    """Microseconds per PING: on a gevent socket, and through gevent's threadpool."""
    import redis

    from ccs.gateway.outbox.redis_conn import connect
    from ccs.gateway.outbox.redis_url import parse

    g = connect(parse(REDIS))
    g.ping()
    t = time.perf_counter()
    for _ in range(n):
        g.ping()
        gevent.sleep(0)
    on_gevent = (time.perf_counter() - t) / n * 1e6
    plain = redis.Redis.from_url(REDIS)
    pool = gevent.get_hub().threadpool
    pool.apply(plain.ping)
    t = time.perf_counter()
    for _ in range(n):
        pool.apply(plain.ping)
    in_pool = (time.perf_counter() - t) / n * 1e6
    g.close()
    plain.close()
    return on_gevent, in_pool
