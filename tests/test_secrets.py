"""Secrets never reach logs, errors, reprs or console output: every provider runs against its
emulator with everything logged at DEBUG, succeeding and failing (wrong key, 401), and all that
was captured is searched for each secret and its base64 forms."""

from __future__ import annotations

import base64
import json
import logging
import sys
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from gevent import subprocess as gsubprocess

from ccs.outcome import Status
from ccs.transport.tls import server_context
from ccs.xmpp.client import CcsClient, CcsConfig
from ccs.xmpp.emulator import CcsEmulator
from ccs.xmpp.message import build_message
from http_fallback.apns.client import ApnsClient
from http_fallback.apns.config import ApnsConfig
from http_fallback.apns.model import Notification
from http_fallback.c2dm.client import C2dmClient, C2dmConfig
from http_fallback.c2dm.emulator import C2dmEmulator
from http_fallback.c2dm.model import C2dmMessage
from http_fallback.fcm import FcmClient, FcmConfig
from http_fallback.fcm.emulator import FcmEmulator
from http_fallback.legacy.client import LegacyClient, LegacyConfig
from http_fallback.legacy.emulator import LegacyEmulator
from http_fallback.legacy.model import LegacyMessage
from http_fallback.mpns.client import MpnsClient, MpnsConfig
from http_fallback.mpns.emulator import MpnsEmulator
from http_fallback.mpns.model import MpnsMessage, Toast
from http_fallback.retry_policy import Backoff
from tests.apns_support import KEY_ID, KEY_PEM, TEAM_ID, TOPIC, emulator, token
from tests.greenlet_errors import no_greenlet_errors  # noqa: F401 - autouse fixture
from tests.helpers import ccs_env, run_ccs

FAST = Backoff(initial=0.01, maximum=0.05, jitter=0.0, attempts=2)


def forms(secret: str | bytes) -> set[str]:
    """The secret and its base64 forms (standard and URL-safe, with and without padding)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    out = {raw.decode("latin-1")}
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        text = enc(raw).decode()
        out |= {text, text.rstrip("=")}
    return out


def key_lines(pem: str | bytes) -> set[str]:
    """Each base64 line of a PEM body: any one of them in a log is a leak."""
    text = pem.decode() if isinstance(pem, bytes) else pem
    return {line for line in text.splitlines() if line and not line.startswith("-----")}


def assert_clean(captured: list[Any], secrets: set[str]) -> None:
    text = "\n".join(c if isinstance(c, str) else repr(c) for c in captured)
    assert len(text) > 200, "nothing was captured: the test would prove nothing"
    leaks = sorted(s[:12] + "..." for s in secrets if s and s in text)
    assert not leaks, f"secrets found in captured output: {leaks}"


@pytest.fixture
def debug_logs(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def outcome_texts(outcomes) -> list[str]:
    return [json.dumps(o.as_json()) + repr(o) for o in outcomes]


# -- CCS -------------------------------------------------------------------------------------

def test_ccs_server_key_and_sasl_blob(pki, debug_logs):
    key, wrong, sender = "ccs-Secret-Key-4242", "ccs-Wrong-Key-7777", "4815162342"
    captured: list[Any] = []
    with CcsEmulator(sender_id=sender, server_key=key, pki=pki) as emu:
        for server_key in (key, wrong):
            config = CcsConfig(sender_id=sender, server_key=server_key, host=emu.host,
                               port=emu.port, ca_file=emu.ca_file, connections=1,
                               connect_timeout=5, reconnect_initial=0.05, reconnect_max=0.1)
            client = CcsClient(config)
            client.start()
            ready = client.wait_ready(3)
            result = client.send(build_message("tok-1", data={"k": "v"}))
            captured += [repr(client), repr(config), str(config), client.stats(),
                         repr(client.pool.sessions) if hasattr(client, "pool") else ""]
            client.stop(timeout=1 if ready else 0.2)
            captured += outcome_texts([result.get(timeout=5)])
            assert ready is (server_key == key)
    captured.append(debug_logs.text)
    secrets = set()
    for k in (key, wrong):
        secrets |= forms(k)
        for domain in ("gcm.googleapis.com", "fcm.googleapis.com"):
            secrets |= forms(b"\x00" + f"{sender}@{domain}".encode() + b"\x00" + k.encode())
    assert_clean(captured, secrets)


def test_ccs_console_send_and_emulate_output(pki, tmp_path):
    key, wrong, sender = "console-Secret-Key-1", "console-Wrong-Key-2", "99887766"
    emu = gsubprocess.Popen([sys.executable, "-m", "ccs", "emulate", "ccs", "--sender-id",
                             sender, "--server-key", key, "--pki-dir", str(tmp_path)],
                            env=ccs_env(), stdout=gsubprocess.PIPE, stderr=gsubprocess.PIPE,
                            text=True)
    try:
        info = json.loads(emu.stdout.readline())
        env = {"CCS_HOST": info["host"], "CCS_PORT": str(info["port"]),
               "CCS_SENDER_ID": sender, "CCS_CA_FILE": info["ca_file"], "CCS_CONNECTIONS": "1"}
        ok = run_ccs(["send", "t1", "--data", "k=v", "--json"],
                     env={**env, "CCS_SERVER_KEY": key})
        refused = run_ccs(["send", "t1", "--data", "k=v", "--connect-timeout", "3"],
                          env={**env, "CCS_SERVER_KEY": wrong})
    finally:
        emu.terminate()
        out, err = emu.communicate(timeout=10)
    assert ok.returncode == 0 and refused.returncode == 2, (ok.stderr, refused.stderr)
    secrets = forms(wrong) | forms(b"\x00" + f"{sender}@gcm.googleapis.com".encode()
                                   + b"\x00" + wrong.encode())
    # the emulator prints its own key (users need it); it must never echo a key presented to it
    assert_clean([ok.stdout, ok.stderr, refused.stdout, refused.stderr, out, err], secrets)
    assert_clean([ok.stdout, ok.stderr, refused.stdout, refused.stderr],
                 forms(key) | forms(b"\x00" + f"{sender}@gcm.googleapis.com".encode()
                                    + b"\x00" + key.encode()))


# -- FCM v1 ------------------------------------------------------------------------------------

def test_fcm_private_key_assertion_and_access_tokens(pki, debug_logs, tmp_path):
    captured: list[Any] = []
    tokens: set[str] = set()
    with FcmEmulator(pki, "proj-s") as emu:
        good = emu.create_service_account(str(tmp_path / "good.json"))
        other = emu.create_service_account(str(tmp_path / "other.json"))
        good_info = json.loads(open(good.path).read())
        # right email and key id, someone else's key: the token endpoint refuses it
        bad_info = {**good_info, "private_key": json.loads(open(other.path).read())["private_key"]}
        (tmp_path / "bad.json").write_text(json.dumps(bad_info))
        for path in (good.path, str(tmp_path / "bad.json")):
            config = FcmConfig(path, base_url=emu.url, iid_url=emu.url, ca_file=pki.ca_file,
                               retry_base_delay=0.01, retry_jitter=0.0, max_attempts=2)
            client = FcmClient(config)
            client.start()
            first = client.send({"token": "tok-1", "data": {"k": "v"}}).get(timeout=10)
            tokens |= set(emu.access_tokens)
            emu.revoke_tokens()  # the next send gets a 401 and re-authenticates
            second = client.send({"token": "tok-2", "data": {"k": "v"}}).get(timeout=10)
            tokens |= set(emu.access_tokens)
            captured += [repr(client), repr(config), str(config), client.stats(),
                         repr(client.account)]
            captured += outcome_texts([first, second])
            client.stop(timeout=2)
            assert (first.status is Status.OK) is (path == good.path), first
    assert len(tokens) >= 2
    captured.append(debug_logs.text)
    secrets = set(tokens) | key_lines(good_info["private_key"]) | key_lines(
        bad_info["private_key"])
    assert_clean(captured, secrets)


# -- legacy, C2DM, MPNS --------------------------------------------------------------------------

def test_legacy_server_key(pki, debug_logs):
    key, wrong = "legacy-Secret-Key-31337", "legacy-Wrong-Key-1"
    captured: list[Any] = []
    with LegacyEmulator(server_key=key, ssl_context=server_context(pki.cert_file,
                                                                    pki.key_file)) as emu:
        for server_key in (key, wrong):
            config = LegacyConfig(server_key=server_key, url=emu.url, ca_file=pki.ca_file,
                                  backoff=FAST)
            client = LegacyClient(config)
            client.start()
            outcome = client.send(LegacyMessage(to="tok-1", data={"k": "v"})).get(timeout=10)
            captured += [repr(client), repr(config), str(config), client.stats()]
            captured += outcome_texts([outcome])
            client.stop(timeout=1)
            assert (outcome.status is Status.OK) is (server_key == key), outcome
    captured.append(debug_logs.text)
    assert_clean(captured, forms(key) | forms(wrong))


def test_c2dm_password_and_auth_tokens(pki, debug_logs, tmp_path):
    email, password, wrong = "sender@example.com", "c2dm-Passw0rd-Secret", "c2dm-Wrong-Pass"
    captured: list[Any] = []
    with C2dmEmulator({email: password},
                      ssl_context=server_context(pki.cert_file, pki.key_file)) as emu:
        for pw in (password, wrong):
            config = C2dmConfig(email=email, password=pw, url=emu.url, login_url=emu.login_url,
                                ca_file=pki.ca_file, backoff=FAST,
                                quota_lock_path=str(tmp_path / "quota.lock"))
            client = C2dmClient(config)
            client.start()
            result = client.send(C2dmMessage("reg-1", "ck", data={"k": "v"}))
            if pw == password:
                assert result.get(timeout=10).status is Status.OK
                emu.expire_auth()  # the next send gets a 401 and logs in again
                emu.rotate_auth()  # and the one after gets Update-Client-Auth
                for n in (2, 3):
                    captured += outcome_texts([client.send(C2dmMessage(
                        f"reg-{n}", "ck", data={"k": "v"})).get(timeout=10)])
            captured += [repr(client), repr(config), str(config), client.stats()]
            client.stop(timeout=1)
            captured += outcome_texts([result.get(timeout=5)])
        tokens = {r.header("authorization", "").split("auth=")[-1] for r in emu.requests}
        tokens |= set(emu._tokens)  # issued, used or not
    tokens.discard("")
    assert tokens
    captured.append(debug_logs.text)
    assert_clean(captured, forms(password) | forms(wrong) | tokens)


def test_mpns_client_key_bytes(pki, debug_logs):
    ctx = server_context(pki.cert_file, pki.key_file, client_ca_file=pki.ca_file)
    with MpnsEmulator(ssl_context=ctx) as emu:
        config = MpnsConfig(ca_file=pki.ca_file, cert_file=pki.client_cert_file,
                            key_file=pki.client_key_file, backoff=FAST)
        client = MpnsClient(config)
        client.start()
        uri = emu.new_channel(authenticated=True)
        outcomes = [client.send(MpnsMessage(uri, Toast("a", "b"))).get(timeout=10),
                    client.send(MpnsMessage(uri + "x", Toast("a", "b"))).get(timeout=10)]
        captured = [repr(client), repr(config), client.stats(), *outcome_texts(outcomes)]
        client.stop(timeout=1)
    assert outcomes[0].status is Status.OK and outcomes[1].status is Status.FAILED
    captured.append(debug_logs.text)
    assert_clean(captured, key_lines(open(pki.client_key_file).read()))


# -- APNs ------------------------------------------------------------------------------------------

def test_apns_p8_key_and_jwt(pki, debug_logs):
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    captured: list[Any] = []
    jwts: list[str] = []
    with emulator(pki) as emu:
        for key in (KEY_PEM, other):
            config = ApnsConfig(host="127.0.0.1", port=emu.port, ca_file=emu.ca_file,
                                topic=TOPIC, connections=1, request_timeout=5.0,
                                backoff_base=0.01, reconnect_base=0.01, key_data=key,
                                key_id=KEY_ID, team_id=TEAM_ID)
            client = ApnsClient(config)
            make = client.handler.signer.make  # a spy: note each JWT the real signer makes
            client.handler.signer.make = lambda now, make=make: jwts.append(make(now)) or jwts[-1]
            with client:
                outcome = client.send(Notification(device=token(1), alert="hi")).get(10)
                captured += [repr(client), repr(config), str(config), client.stats()]
            captured += outcome_texts([outcome])
            assert (outcome.status is Status.OK) is (key is KEY_PEM), outcome
    assert len(jwts) >= 2
    captured.append(debug_logs.text)
    assert_clean(captured, key_lines(KEY_PEM) | key_lines(other) | set(jwts)
                 | {j.split(".")[2] for j in jwts})


def test_apns_pfx_passphrase(pki, debug_logs):
    passphrase = "pfx-Passphrase-Secret-9"
    key = serialization.load_pem_private_key(open(pki.client_key_file, "rb").read(), None)
    cert = x509.load_pem_x509_certificate(open(pki.client_cert_file, "rb").read())
    pfx = pkcs12.serialize_key_and_certificates(
        b"client", key, cert, None, serialization.BestAvailableEncryption(passphrase.encode()))
    captured: list[Any] = []
    with emulator(pki, cert_auth=True) as emu:
        for phrase in (passphrase, "wrong-" + passphrase):
            try:
                config = ApnsConfig(host="127.0.0.1", port=emu.port, ca_file=emu.ca_file,
                                    topic=TOPIC, connections=1, request_timeout=5.0,
                                    pfx_data=pfx, passphrase=phrase)
                with ApnsClient(config) as client:
                    outcome = client.send(Notification(device=token(2), alert="hi")).get(10)
                    captured += [repr(client), repr(config), str(config), client.stats()]
                captured += outcome_texts([outcome])
            except Exception as e:  # noqa: BLE001 - a wrong passphrase is refused by name
                captured += [repr(e), str(e)]
                assert phrase != passphrase
    captured.append(debug_logs.text)
    assert_clean(captured, forms(passphrase) | forms("wrong-" + passphrase)
                 | key_lines(open(pki.client_key_file).read())
                 | {base64.b64encode(pfx[i:i + 48]).decode() for i in range(0, len(pfx), 48)})
