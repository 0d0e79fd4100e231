"""`ccs run/enqueue/status/stats/send/tail` as real subprocesses, and kill -9 mid-run."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import gevent
from gevent import subprocess as gsubprocess

from tests.helpers import ROOT, ccs_env, run_ccs, wait_until

TOKEN = "test-admin-token"


def start_gateway(env: dict[str, str]) -> tuple[subprocess.Popen[str], int | None]:
    """Start `ccs run`; returns the process and its admin port (read from its banner)."""
    proc = subprocess.Popen([sys.executable, "-m", "ccs", "run"], env=ccs_env(env), cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr
    for line in proc.stderr:
        if "ccs-gateway running" in line:
            port = int(line.rsplit(":", 1)[1]) if "admin API" in line else None
            return proc, port
    raise AssertionError(f"gateway did not start (exit {proc.wait()})")


def counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT state, count(*) FROM messages GROUP BY state"))
    finally:
        db.close()


def test_run_send_stats_tail_and_clean_stop(tmp_path: Path) -> None:
    env = {"CCS_PLUGINS": "tests.plugin_local", "CCS_OUTBOX": str(tmp_path / "o.sqlite"),
           "CCS_PROVIDERS": "ccs,apns", "CCS_ADMIN_PORT": "0", "CCS_ADMIN_TOKEN": TOKEN}
    proc, port = start_gateway(env)
    try:
        client_env = {**env, "CCS_ADMIN_PORT": str(port)}
        tail = gsubprocess.Popen([sys.executable, "-m", "ccs", "tail", "--kinds", "outcome"],
                                 env=ccs_env(client_env), cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        assert tail.stdout and tail.stderr
        # Subscribed before the message exists: the outcome cannot slip past it.
        with gevent.Timeout(20):
            assert "following" in tail.stderr.readline()
        r = run_ccs(["send", "--via-gateway", "tokX", "--data", "a=b", "--json"],
                    env=client_env)
        assert r.returncode == 0, r.stderr
        sent = json.loads(r.stdout)
        assert sent["state"] == "queued" and sent["to"] == "tokX"
        box = tmp_path / "o.sqlite"
        wait_until(lambda: counts(box).get("ok") == 1, what="the message sent")
        rec = json.loads(run_ccs(["status", "--json", sent["id"]], env=env).stdout)
        assert rec["state"] == "ok" and rec["via"] == "ccs"
        with gevent.Timeout(20):
            line = json.loads(tail.stdout.readline())
        assert line["event"] == "outcome" and line["id"] == rec["id"]
        tail.terminate()
        tail.wait()
        r = run_ccs(["stats", "--json"], env=client_env)
        st = json.loads(r.stdout)
        assert st["providers"]["ccs"]["messages_sent"] == 1 and "apns" in st["providers"]
        r = run_ccs(["drain"], env=client_env)  # the test provider cannot drain
        assert r.returncode == 1 and "409" in r.stderr and "no CCS provider" in r.stderr
        r = run_ccs(["stats"], env={**client_env, "CCS_ADMIN_TOKEN": "wrong"})
        assert r.returncode == 1 and "401" in r.stderr
        r = run_ccs(["send", "--via-gateway", "tokY"], env={**client_env, "CCS_ADMIN_PORT": "1"})
        assert r.returncode == 3 and "cannot reach the gateway" in r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "left queued" in err


def test_enqueue_streams_and_rejects_unknown_via(tmp_path: Path) -> None:
    env = {"CCS_OUTBOX": str(tmp_path / "e.sqlite")}
    tokens = "".join(f"t{i}\n" for i in range(2500)) + '{"to": "j", "message_id": "fixed"}\n'
    r = run_ccs(["enqueue", "--tokens-file", "-", "--batch", "300"], env=env, input=tokens)
    assert r.returncode == 0, r.stderr
    assert "enqueued 2501 messages" in r.stdout
    r = run_ccs(["enqueue", "--tokens-file", "-"], env=env,
                input='{"to":"j","message_id":"fixed"}\n')
    assert "enqueued 0 messages (1 already" in r.stdout
    assert counts(tmp_path / "e.sqlite") == {"queued": 2501}
    r = run_ccs(["enqueue", "--tokens-file", "-", "--via", "mpns"], env=env, input="x\n")
    assert r.returncode == 2 and "mpns" in r.stderr
    bad = 'ok1\n{"to": "b", "data": {"n": 5}}\n{oops\nok2\n'
    r = run_ccs(["enqueue", "--tokens-file", "-"], env=env, input=bad)
    assert r.returncode == 1 and "enqueued 2 messages" in r.stdout and "2 lines skipped" in r.stdout
    assert "line 2 skipped" in r.stderr and "data.n" in r.stderr and "line 3 skipped" in r.stderr
    assert counts(tmp_path / "e.sqlite") == {"queued": 2503}


def test_kill_9_mid_run_then_restart_every_message_once(tmp_path: Path) -> None:
    box, record = tmp_path / "k.sqlite", tmp_path / "received.txt"
    env = {"CCS_PLUGINS": "tests.plugin_local", "CCS_OUTBOX": str(box),
           "CCS_ADMIN_ENABLED": "false", "CCS_TEST_RECORD": str(record),
           "CCS_TEST_DELAY": "0.05", "CCS_PROVIDER_CONCURRENCY": "200"}
    n = 10_000
    r = run_ccs(["enqueue", "--tokens-file", "-"], env=env,
                input="".join(f"tok{i}\n" for i in range(n)))
    assert r.returncode == 0, r.stderr
    proc, _ = start_gateway(env)
    wait_until(lambda: record.exists() and len(record.read_text().split()) >= 3000,
               timeout=30, what="3000 messages handed to the provider")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    mid = counts(box)
    assert mid.get("in_flight", 0) > 0 and mid.get("queued", 0) > 0  # really mid-run
    proc, _ = start_gateway({**env, "CCS_TEST_DELAY": "0"})
    try:
        wait_until(lambda: counts(box).get("ok") == n, timeout=60, what="all ok")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    db = sqlite3.connect(box)
    rows = dict(db.execute("SELECT id, resent FROM messages"))
    states = Counter(s for (s,) in db.execute("SELECT state FROM messages"))
    db.close()
    assert len(rows) == n and states == {"ok": n}
    seen = Counter(record.read_text().split())
    assert set(seen) == set(rows)  # the provider's record agrees: every message arrived
    dupes = {k: c - 1 for k, c in seen.items() if c > 1}
    assert all(rows[k] >= d for k, d in dupes.items())  # only re-sent in-flight ones repeat
    assert sum(dupes.values()) <= mid["in_flight"]


def test_run_refuses_to_start_without_admin_token(tmp_path: Path) -> None:
    r = run_ccs(["run"], env={"CCS_PLUGINS": "tests.plugin_local",
                              "CCS_OUTBOX": str(tmp_path / "t.sqlite")})
    assert r.returncode == 2 and "admin.token" in r.stderr and "Traceback" not in r.stderr
    r = run_ccs(["run"], env={"CCS_PLUGINS": "tests.no_such_plugin", "CCS_ADMIN_TOKEN": "x" * 16})
    assert r.returncode == 2 and "gateway.plugins" in r.stderr
