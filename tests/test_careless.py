"""What a careless user or a hostile sender runs into: signatures with odd characters, URLs
carrying passwords, short admin tokens, an existing CA, and how to see DEBUG logs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from ccs.gateway.feedback import sign, verify
from ccs.gateway.settings import Settings, mask_urls
from tests.helpers import ROOT, ccs_env, run_ccs


def test_verify_is_false_for_any_wrong_header() -> None:
    body = b'{"token": "t"}'
    good = sign("s3cret", body)
    assert verify("s3cret", body, good) and verify("s3cret", body, good.encode())
    for bad in ("sha256=é" + good[8:], "sha256=\ud800", "", None, 17, b"\xff", good + " ",
                "ｓha256=" + good[7:]):
        assert verify("s3cret", body, bad) is False, bad  # type: ignore[arg-type]


def test_credentials_in_urls_are_masked_everywhere(tmp_path: Path) -> None:
    assert mask_urls("https://alice:pw@hooks.example/x") == "https://alice:***@hooks.example/x"
    assert mask_urls("see https://tok3n@h/p and redis://:pw@r:6379/0") == \
        "see https://***@h/p and redis://:***@r:6379/0"
    assert mask_urls("https://hooks.example/x?a=b@c") == "https://hooks.example/x?a=b@c"
    env = {"CCS_WEBHOOK_URL": "https://alice:hunter2@hooks.example/x",
           "CCS_FCM_URL": "https://svc:pa55@fcm.example", "CCS_ADMIN_TOKEN": "t" * 16}
    for args in (["settings"], ["settings", "--json"]):
        r = run_ccs(args, env=env)
        assert r.returncode == 0, r.stderr
        assert "hunter2" not in r.stdout and "pa55" not in r.stdout
        assert "alice:***@hooks.example" in r.stdout
    s = Settings.load(None, env)
    assert "hunter2" not in repr(s)
    from ccs.gateway.feedback import Webhook

    assert "hunter2" not in repr(Webhook(env["CCS_WEBHOOK_URL"], "secret"))


def test_a_short_admin_token_stops_ccs_run(tmp_path: Path) -> None:
    r = run_ccs(["run"], env={"CCS_PLUGINS": "tests.plugin_local", "CCS_ADMIN_TOKEN": "short",
                              "CCS_OUTBOX": str(tmp_path / "o.sqlite")})
    assert r.returncode == 2 and "admin.token" in r.stderr and "16" in r.stderr
    assert "Traceback" not in r.stderr


def _emulate(pki: Path) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "ccs", "emulate", "ccs", "--pki-dir",
                             str(pki)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ccs_env(), cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        return json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def test_emulate_ccs_keeps_an_existing_ca(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    first = _emulate(pki)
    ca = (pki / "ca.pem").read_bytes()
    second = _emulate(pki)  # reused: clients configured with it keep working
    assert second["ca_file"] == first["ca_file"] and (pki / "ca.pem").read_bytes() == ca
    (pki / "server.pem").unlink()
    r = run_ccs(["emulate", "ccs", "--pki-dir", str(pki)], timeout=30)
    assert r.returncode == 2 and "--pki-dir" in r.stderr and "server.pem" in r.stderr
    assert (pki / "ca.pem").read_bytes() == ca


def test_log_level_debug_is_a_setting(tmp_path: Path) -> None:
    env = {"CCS_PLUGINS": "tests.plugin_local", "CCS_ADMIN_ENABLED": "false",
           "CCS_OUTBOX": str(tmp_path / "o.sqlite")}
    for level, shown in (("debug", True), ("info", False)):
        proc = subprocess.Popen([sys.executable, "-m", "ccs", "run"],
                                env=ccs_env({**env, "CCS_LOG_LEVEL": level}), cwd=ROOT,
                                stderr=subprocess.PIPE, text=True)
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "ccs-gateway running" in line:
                break
        proc.send_signal(signal.SIGTERM)
        seen.append(proc.communicate(timeout=20)[1])
        assert proc.returncode == 0
        assert ("DEBUG ccs.gateway.supervisor: started" in "".join(seen)) is shown, seen
    r = run_ccs(["settings"], env={"CCS_LOG_LEVEL": "loud"})
    assert r.returncode == 2 and "CCS_LOG_LEVEL" in r.stderr


def test_log_lines_mask_urls() -> None:
    import logging

    from ccs.console.common import MaskUrls

    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "POST %s failed: %s", (
        "https://bob:s3cr3t@hooks.example/t", "refused"), None)
    assert MaskUrls().filter(record)
    assert record.getMessage() == "POST https://bob:***@hooks.example/t failed: refused"
