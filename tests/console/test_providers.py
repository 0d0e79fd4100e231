"""`ccs send` through every provider: a subprocess configured by environment alone, against
that provider's emulator with scripted failures; every JSON line and the exit status checked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ccs.transport.tls import server_context
from ccs.xmpp.emulator import CcsEmulator
from tests.apns_support import KEY_ID, KEY_PEM, TEAM_ID, TOPIC, emulator, token
from tests.helpers import run_ccs

FIELDS = {"message_id", "to", "via", "status", "error", "canonical_id", "attempts"}


def send(args: list[str], env: dict[str, str]) -> tuple[int, list[dict[str, Any]], str]:
    res = run_ccs(["send", "--json", *args], env=env)
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    for line in lines:
        assert set(line) >= FIELDS
    assert "Traceback" not in res.stderr
    return res.returncode, lines, res.stderr


def test_fcm_http_v1(pki):
    from http_fallback.fcm.emulator import FcmEmulator

    with FcmEmulator(pki, "proj-console") as fcm:
        fcm.fail("gone", "unregistered")
        fcm.fail("flaky", "unavailable", times=1, retry_after=0)
        env = {"CCS_FCM_CREDENTIALS": fcm.credentials_file, "CCS_FCM_URL": fcm.url,
               "CCS_CA_FILE": pki.ca_file}
        code, lines, err = send(["--via", "http", "ok-1", "gone", "flaky", "--data", "k=v",
                                 "--title", "T", "--ttl", "60", "--priority", "high"], env)
        sent = [s for s in fcm.seen if s.path.endswith("messages:send")]
    assert code == 1, err
    assert [(x["to"], x["via"], x["status"], x["error"], x["attempts"]) for x in lines] == [
        ("ok-1", "http", "ok", None, 1),
        ("gone", "http", "failed", "UNREGISTERED", 1),
        ("flaky", "http", "ok", None, 2),
    ]
    assert lines[0]["message_id"].startswith("projects/proj-console/messages/")
    first = next(s.message for s in sent if s.target == "ok-1")
    assert first["data"] == {"k": "v"} and first["notification"] == {"title": "T"}
    assert first["android"] == {"priority": "HIGH", "ttl": "60s"}


def test_legacy_http(pki):
    from http_fallback.legacy.emulator import LegacyEmulator

    ctx = server_context(pki.cert_file, pki.key_file)
    with LegacyEmulator("legacy-key", ssl_context=ctx) as legacy:
        legacy.canonical["old"] = "new"
        legacy.unregistered.add("dead")
        env = {"CCS_LEGACY_URL": legacy.url, "CCS_LEGACY_KEY": "legacy-key",
               "CCS_CA_FILE": pki.ca_file}
        code, lines, err = send(["--via", "legacy", "fine", "old", "dead", "--data", "a=b"], env)
        delivered = [d.payload for d in legacy.delivered]
    assert code == 1, err
    assert [(x["to"], x["via"], x["status"], x["error"], x["canonical_id"]) for x in lines] == [
        ("fine", "legacy", "ok", None, None),
        ("old", "legacy", "ok", None, "new"),
        ("dead", "legacy", "failed", "NotRegistered", None),
    ]
    assert lines[0]["message_id"].startswith("0:")  # the service's id, not ours
    assert delivered[0]["data"] == {"a": "b"}


def test_c2dm(pki, tmp_path):
    from http_fallback.c2dm.emulator import C2dmEmulator

    ctx = server_context(pki.cert_file, pki.key_file)
    with C2dmEmulator({"sender@example.com": "pw-123"}, ssl_context=ctx) as c2dm:
        c2dm.script("bad-reg", "InvalidRegistration")
        env = {"CCS_C2DM_URL": c2dm.url, "CCS_C2DM_LOGIN_URL": c2dm.login_url,
               "CCS_C2DM_EMAIL": "sender@example.com", "CCS_C2DM_PASSWORD": "pw-123",
               "CCS_C2DM_QUOTA_LOCK": str(tmp_path / "quota.lock"), "CCS_CA_FILE": pki.ca_file}
        code, lines, err = send(["--c2dm-registration-id", "reg-1", "--c2dm-registration-id",
                                 "bad-reg", "--data", "score=5", "--collapse-key", "news"], env)
        delivered = [(d.registration_id, d.data) for d in c2dm.delivered]
    assert code == 1, err
    assert [(x["to"], x["via"], x["status"], x["error"]) for x in lines] == [
        ("reg-1", "c2dm", "ok", None), ("bad-reg", "c2dm", "failed", "InvalidRegistration")]
    assert lines[0]["message_id"].startswith("0:")
    assert delivered == [("reg-1", {"score": "5"})]
    assert "pw-123" not in err


def test_mpns(pki):
    from http_fallback.mpns.emulator import MpnsEmulator

    ctx = server_context(pki.cert_file, pki.key_file)
    with MpnsEmulator(ssl_context=ctx) as mpns:
        good, gone = mpns.new_channel(), mpns.new_channel()
        mpns.expire(gone)
        env = {"CCS_CA_FILE": pki.ca_file}
        code, lines, err = send(["--mpns-uri", good, "--mpns-uri", gone, "--title", "Hi & <b>",
                                 "--body", "there"], env)
        fields = [d.fields for d in mpns.delivered]
    assert code == 1, err
    assert [(x["to"], x["via"], x["status"]) for x in lines] == [
        (good, "mpns", "ok"), (gone, "mpns", "failed")]
    assert lines[1]["error"]
    assert fields == [{"Text1": "Hi & <b>", "Text2": "there"}]


def test_apns(pki, tmp_path):
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(KEY_PEM)
    with emulator(pki) as apns:
        apns.reject(token(2), "BadDeviceToken")
        env = {"CCS_APNS_HOST": "127.0.0.1", "CCS_APNS_PORT": str(apns.port),
               "CCS_APNS_KEY_FILE": str(key_file), "CCS_APNS_KEY_ID": KEY_ID,
               "CCS_APNS_TEAM_ID": TEAM_ID, "CCS_APNS_TOPIC": TOPIC, "CCS_CA_FILE": pki.ca_file}
        code, lines, err = send(["--apns-token", token(1), "--apns-token", token(2),
                                 "--alert", "Hello", "--badge", "3", "--sound", "ping.aiff",
                                 "--data", "from_user=ann"], env)
        seen = [s for s in apns.seen if s.token == token(1)]
    assert code == 1, err
    assert [(x["to"], x["via"], x["status"], x["error"]) for x in lines] == [
        (token(1), "apns", "ok", None), (token(2), "apns", "failed", "BadDeviceToken")]
    assert len(lines[0]["message_id"]) == 36  # the apns-id, a UUID
    assert seen[0].payload == {"aps": {"alert": "Hello", "badge": 3, "sound": "ping.aiff"},
                               "from_user": "ann"}


def test_apns_all_ok_exits_0_and_topic_suffix(pki, tmp_path):
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(KEY_PEM)
    with emulator(pki, topics=(TOPIC, TOPIC + ".voip")) as apns:
        env = {"CCS_APNS_HOST": "127.0.0.1", "CCS_APNS_PORT": str(apns.port),
               "CCS_APNS_KEY_FILE": str(key_file), "CCS_APNS_KEY_ID": KEY_ID,
               "CCS_APNS_TEAM_ID": TEAM_ID, "CCS_APNS_TOPIC": TOPIC, "CCS_CA_FILE": pki.ca_file}
        code, lines, err = send(["--apns-token", token(7), "--push-type", "voip",
                                 "--topic-suffix", ".voip", "--data", "call=1"], env)
        (seen,) = apns.seen
    assert code == 0, err
    assert lines[0]["status"] == "ok"
    assert seen.headers["apns-topic"] == TOPIC + ".voip"


def test_ccs_falls_back_to_http_when_no_session_can_be_had(pki):
    from http_fallback.fcm.emulator import FcmEmulator

    with FcmEmulator(pki, "proj-fb") as fcm:
        env = {"CCS_HOST": "127.0.0.1", "CCS_PORT": "1", "CCS_SENDER_ID": "1",
               "CCS_SERVER_KEY": "k", "CCS_FCM_CREDENTIALS": fcm.credentials_file,
               "CCS_FCM_URL": fcm.url, "CCS_CA_FILE": pki.ca_file}
        code, lines, err = send(["t1", "t2", "--connect-timeout", "1"], env)
    assert code == 0, err
    assert [(x["to"], x["via"], x["status"]) for x in lines] == [("t1", "http", "ok"),
                                                                 ("t2", "http", "ok")]
    assert "falling back to http" in err


def test_ccs_via_explicit_does_not_fall_back(pki):
    env = {"CCS_HOST": "127.0.0.1", "CCS_PORT": "1", "CCS_SENDER_ID": "1",
           "CCS_SERVER_KEY": "k", "CCS_FCM_CREDENTIALS": "/nonexistent.json"}
    code, lines, err = send(["--via", "ccs", "t1", "--connect-timeout", "1"], env)
    assert code == 3 and lines == []


@pytest.mark.parametrize("via, env", [
    ("legacy", {"CCS_LEGACY_URL": "https://127.0.0.1:1/fcm/send", "CCS_LEGACY_KEY": "k"}),
    ("c2dm", {"CCS_C2DM_URL": "https://127.0.0.1:1/c2dm/send",
              "CCS_C2DM_LOGIN_URL": "https://127.0.0.1:1/login", "CCS_C2DM_EMAIL": "a@b",
              "CCS_C2DM_PASSWORD": "p"}),
])
def test_unreachable_service_exits_3(via, env):
    flag = "--c2dm-registration-id" if via == "c2dm" else "--token"
    code, lines, err = send(["--via", via, flag, "t1", "--connect-timeout", "1"], env)
    assert code == 3 and lines == []
    assert "could not reach" in err


@pytest.mark.parametrize("args, needle", [
    (["--via", "c2dm", "--c2dm-registration-id", "r", "--title", "x"], "--title"),
    (["--apns-token", "00", "--badge", "-1"], "--badge"),
    (["--apns-token", "00", "--alert", "x"], "CCS_APNS_KEY_FILE"),
    (["--mpns-uri", "https://127.0.0.1:1/x"], "--title"),
    (["--apns-token", "00", "--mpns-uri", "https://x/"], "one kind of target"),
    (["--via", "apns", "--topic", "news"], "--topic"),
    (["--via", "http", "t", "--priority", "1"], "--priority"),
])
def test_options_that_do_not_fit_the_provider_exit_2(args, needle):
    res = run_ccs(["send", *args], env={"CCS_APNS_TOPIC": TOPIC})
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr


def test_ccs_lines_name_the_provider(pki):
    with CcsEmulator(sender_id="77", server_key="kk", pki=pki) as emu:
        env = {"CCS_HOST": emu.host, "CCS_PORT": str(emu.port), "CCS_SENDER_ID": "77",
               "CCS_SERVER_KEY": "kk", "CCS_CA_FILE": emu.ca_file}
        code, lines, err = send(["a"], env)
    assert code == 0, err
    assert lines[0]["via"] == "ccs" and lines[0]["message_id"] == emu.record.downstream_ids()[0]
