"""`ccs send` never waits without a bound: a CCS that logs in and never answers, and an FCM
token endpoint that takes the connection and says nothing, each end the command in time with
the exit status docs/console.rst gives."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from gevent.event import Event
from gevent.server import StreamServer

from tests.helpers import run_ccs
from tests.hostile_ccs import HostileCcs, gcm


def useless_answer(link, message) -> None:
    """JSON the client cannot match to anything it sent."""
    link.send(gcm({"message_type": "ack", "message_id": 17, "from": ["x"]}))


@pytest.mark.parametrize("attack", [lambda link, message: None, useless_answer],
                         ids=["silent", "useless-json"])
def test_ccs_that_never_acks_ends_within_wait(pki, attack) -> None:
    silent = HostileCcs(pki, attack, bad_connections=10_000)
    with silent:
        env = {"CCS_HOST": "127.0.0.1", "CCS_PORT": str(silent.port), "CCS_SENDER_ID": "42",
               "CCS_SERVER_KEY": "k", "CCS_CA_FILE": pki.ca_file, "CCS_CONNECTIONS": "1",
               "CCS_ACK_TIMEOUT": "1"}
        began = time.monotonic()
        r = run_ccs(["send", "t1", "t2", "--ttl", "3600", "--wait", "3", "--json"], env=env,
                    timeout=60)
        took = time.monotonic() - began
    assert r.returncode == 1, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["to"], x["status"], x["error"]) for x in lines] == [
        ("t1", "unknown", "NO_ANSWER"), ("t2", "unknown", "NO_ANSWER")]
    assert took < 30, took  # --wait 3, the provider's 5 s stop, start-up: far from ttl
    assert silent.received  # it was sent, and never answered


def test_a_silent_fcm_token_endpoint_is_exit_3_within_connect_timeout(pki, tmp_path: Path
                                                                       ) -> None:
    from http_fallback.fcm.emulator import FcmEmulator

    release = Event()  # the token endpoint takes the connection and says nothing, ever

    def silent(sock, addr) -> None:
        release.wait()

    hole = StreamServer(("127.0.0.1", 0), silent)
    hole.start()
    try:
        with FcmEmulator(pki, "proj-silent") as fcm:
            info = json.loads(Path(fcm.credentials_file).read_text())
            info["token_uri"] = f"https://127.0.0.1:{hole.server_port}/token"
            creds = tmp_path / "creds.json"
            creds.write_text(json.dumps(info))
            env = {"CCS_FCM_CREDENTIALS": str(creds), "CCS_FCM_URL": fcm.url,
                   "CCS_CA_FILE": pki.ca_file}
            began = time.monotonic()
            r = run_ccs(["send", "--via", "http", "t1", "--connect-timeout", "2"], env=env,
                        timeout=60)
            took = time.monotonic() - began
    finally:
        release.set()
        hole.stop()
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert "did not answer within 2s" in r.stderr and "Traceback" not in r.stderr
    assert took < 20, took


def test_fcm_refusing_the_credentials_is_exit_2_before_sending(pki, tmp_path: Path) -> None:
    """The FCM declaration's preflight asks the token endpoint: a refusal is a usage error."""
    from http_fallback.fcm.emulator import FcmEmulator

    with FcmEmulator(pki, "proj-refuse") as fcm:
        info = json.loads(Path(fcm.credentials_file).read_text())
        info["private_key_id"] = "not-a-key-the-emulator-knows"
        creds = tmp_path / "creds.json"
        creds.write_text(json.dumps(info))
        env = {"CCS_FCM_CREDENTIALS": str(creds), "CCS_FCM_URL": fcm.url,
               "CCS_CA_FILE": pki.ca_file}
        r = run_ccs(["send", "--via", "http", "t1", "--connect-timeout", "5"], env=env,
                    timeout=60)
        accepted, issued = fcm.messages_accepted, fcm.tokens_issued
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "authentication refused" in r.stderr and "Traceback" not in r.stderr
    assert (accepted, issued) == (0, 0)
