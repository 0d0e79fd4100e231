"""`ccs emulate ccs` as a real subprocess: one JSON line, serves a client, stops on a signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.ccs_raw import RawCcs
from tests.helpers import ROOT, ccs_env, run_ccs


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_emulate_ccs_prints_json_serves_and_stops(sig, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccs", "emulate", "ccs", "--port", "0", "--sender-id", "42",
         "--pki-dir", str(tmp_path / "pki"),
         "--server-key", "k3y", "--ack-delay", "0.01", "--drain-after", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ccs_env(), cwd=ROOT)
    try:
        info = json.loads(proc.stdout.readline())
        assert set(info) >= {"host", "port", "ca_file", "sender_id", "server_key"}
        assert (info["host"], info["sender_id"], info["server_key"]) == ("127.0.0.1", "42", "k3y")
        assert info["port"] > 0 and info["emulator"] == "ccs"
        assert info["ca_file"] == str(tmp_path / "pki" / "ca.pem")
        client = RawCcs(SimpleNamespace(**info))
        assert client.login() == "42@gcm.googleapis.com/test"
        for mid in ("a", "b"):
            client.send_gcm({"to": "tok", "message_id": mid})
        got = [client.next_gcm() for _ in range(3)]
        kinds = [g.get("control_type") or g["message_type"] for g in got]
        assert sorted(kinds) == ["CONNECTION_DRAINING", "ack", "ack"]
        client.close()
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_emulate_ccs_bad_option_is_a_usage_error():
    done = run_ccs(["emulate", "ccs", "--drain-after", "0"])
    assert done.returncode == 2
    assert "drain_after" in done.stderr
    assert "Traceback" not in done.stderr
