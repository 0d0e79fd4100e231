"""Driving examples/chat as real servers: start gunicorn or pywsgi, post under load, read pids."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from gevent import subprocess
from gevent.pool import Pool

from ccs.transport.http11 import HttpError, HttpPool
from ccs.xmpp.emulator import CcsEmulator
from tests.helpers import ROOT, ccs_env, wait_until

SENDER, KEY = "5550001616", "chat-example-key"
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def chat_env(emu: CcsEmulator, outbox: str, **extra: str) -> dict[str, str]:
    env = {"CCS_OUTBOX": outbox, "CCS_ADMIN_ENABLED": "0", "CCS_HOST": emu.host,
           "CCS_PORT": str(emu.port), "CCS_SENDER_ID": SENDER, "CCS_SERVER_KEY": KEY,
           "CCS_CA_FILE": emu.ca_file, "CCS_CONNECTIONS": "1", "CCS_FALLBACK_PROVIDER": "",
           "CCS_OUTBOX_RECLAIM_IDLE": "1.0", "CCS_OUTBOX_HEARTBEAT": "0.2",
           "CCS_CONNECTION_BUDGET": "8", "CCS_STOP_TIMEOUT": "5"}
    env.update(extra)
    return ccs_env(env)


class Server:
    """A server process; its stderr is read as it comes (log lines kept in `log`)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self.out: list[str] = []
        self._readers = [gevent.spawn(self._read, self.proc.stderr, self.log),
                         gevent.spawn(self._read, self.proc.stdout, self.out)]

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, timeout: float = 30) -> str:
        """The address it listens on, from its first lines (gunicorn's log, serve's JSON)."""
        found: list[str] = []

        def listening() -> bool:
            for line in self.log:
                m = re.search(r"Listening at: (http://\S+)", line)
                if m:
                    found.append(m.group(1))
            found.extend(json.loads(line)["url"] for line in self.out if line.startswith("{"))
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: " +
                                     "\n".join(self.log[-20:]))
            return bool(found)

        wait_until(listening, timeout=timeout, what="the server listening")
        return found[0]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        """Its exit status, once it exits by itself and its output is read."""
        rc = self.proc.wait(timeout=timeout)
        gevent.joinall(self._readers, timeout=5)
        return rc

    def text(self) -> str:
        return "\n".join(self.log)


def gunicorn(env: dict[str, str], workers: int = 2, extra: list[str] | None = None) -> Server:
    return Server([GUNICORN, "-c", "examples/chat/gunicorn.conf.py", "-b", "127.0.0.1:0",
                   "-w", str(workers), *(extra or [])], env)


def pywsgi(env: dict[str, str]) -> Server:
    return Server([sys.executable, "-m", "examples.chat.serve", "--port", "0"], env)


def children(pid: int) -> list[int]:
    """Live child processes of `pid` (gunicorn's workers)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return sorted(out)


@dataclass
class Load:
    """Clients posting /notify, each message with its own message_id (the idempotency key) and
    retried until a 202: a POST cut by a deploy or a kill is stored once all the same."""

    url: str
    accepted: dict[str, float] = field(default_factory=dict)  # message_id -> time of its 202
    retries: int = 0
    unavailable: int = 0  # 503 answers (each with Retry-After)

    def __post_init__(self) -> None:
        self.http = HttpPool(self.url, max_connections=50, timeout=15)

    def post(self, mid: str, to: str, deadline: float = 90) -> None:
        body = json.dumps({"to": to, "data": {"n": mid}, "message_id": mid}).encode()
        give_up = time.monotonic() + deadline
        while True:
            try:
                resp = self.http.request("POST", "/notify", {"content-type": "application/json"},
                                         body, idempotent=True)
                if resp.status == 202:
                    assert resp.json() == {"id": mid}
                    self.accepted[mid] = time.time()
                    return
                assert resp.status == 503, (resp.status, resp.body)
                assert resp.headers.get("retry-after"), resp.headers
                self.unavailable += 1
            except HttpError:
                pass
            self.retries += 1
            assert time.monotonic() < give_up, f"{mid} never accepted"
            gevent.sleep(0.05)  # a client's retry pause, not synchronisation

    def run(self, ids: list[str], concurrency: int = 20,
            during: Callable[[int], None] | None = None) -> None:
        """Post every id; `during(i)` is called as message i goes out (deploys, kills)."""
        pool = Pool(concurrency)
        for i, mid in enumerate(ids):
            if during is not None:
                during(i)
            pool.spawn(self.post, mid, f"tok-{mid}")
        pool.join(raise_error=True)

    def close(self) -> None:
        self.http.close()


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch in [start, end] with none of `times` in it."""
    points = sorted([start, *[t for t in times if start <= t <= end], end])
    return max(b - a for a, b in zip(points, points[1:], strict=False))
