"""C2DM with node2dm's rules: the pure core, and C2dmClient against C2dmEmulator over TLS."""

from __future__ import annotations

import logging
import os
import urllib.parse

import pytest

from ccs.outcome import Status, TokenEventKind
from ccs.transport.http11 import HttpClient
from ccs.transport.tls import server_context
from http_fallback.c2dm import protocol
from http_fallback.c2dm.client import C2dmClient, C2dmConfig
from http_fallback.c2dm.emulator import C2dmEmulator
from http_fallback.c2dm.model import C2dmMessage, MessageError
from http_fallback.c2dm.protocol import Action
from http_fallback.emulator_base import HttpEmulator, Reply
from http_fallback.retry_policy import Backoff
from tests.helpers import wait_until

EMAIL, PASSWORD = "sender@example.com", "s3cret-Passw0rd"
FAST = Backoff(initial=0.02, jitter=0.0, attempts=4)
NODE2DM_STATS = {"uptime", "messages_sent", "messages_in_queue", "backing_off", "total_errors",
                 "rate_limited_tokens", "logged_in_to_c2dm", "token_age"}


@pytest.fixture
def emu(pki):
    ctx = server_context(pki.cert_file, pki.key_file)
    with C2dmEmulator({EMAIL: PASSWORD}, ssl_context=ctx) as e:
        yield e


def make_client(emu, pki, tmp_path, **kw):
    cfg = C2dmConfig(email=EMAIL, password=kw.pop("password", PASSWORD), url=emu.url,
                     login_url=emu.login_url, ca_file=pki.ca_file,
                     quota_lock_path=str(tmp_path / "quota.lock"), backoff=FAST, **kw)
    client = C2dmClient(cfg)
    client.events = []
    client.token_events.add(client.events.append)
    client.start()
    return client


@pytest.fixture
def client(emu, pki, tmp_path):
    c = make_client(emu, pki, tmp_path)
    yield c
    c.stop(timeout=1)


def msg(token="tok", **kw):
    return C2dmMessage(token, kw.pop("collapse_key", "ck"), **kw)


def form(request):
    return {k: v[0] for k, v in urllib.parse.parse_qs(request.body.decode()).items()}


# --- pure core ----------------------------------------------------------------------------

def test_model_checks():
    with pytest.raises(MessageError, match="^collapse_key:"):
        C2dmMessage("tok", "")
    with pytest.raises(MessageError, match="^data:"):
        C2dmMessage("tok", "ck", {"k": "x" * 1024})
    with pytest.raises(MessageError, match=r"^data\.n:"):
        C2dmMessage("tok", "ck", {"n": 5})
    assert C2dmMessage("tok", "ck", {"k": "x" * 1023}).data["k"]


def test_protocol_forms_and_answers():
    login = urllib.parse.parse_qs(protocol.encode_login("a@b", "p&w", "src").decode())
    assert login == {"accountType": ["HOSTED_OR_GOOGLE"], "Email": ["a@b"], "Passwd": ["p&w"],
                     "service": ["ac2dm"], "source": ["src"]}
    assert protocol.parse_login(200, b"SID=1\nLSID=2\nAuth=tok\n").auth == "tok"
    refused = protocol.parse_login(403, b"Error=BadAuthentication\n")
    assert (refused.auth, refused.error) == (None, "BadAuthentication")
    assert "tok" not in repr(protocol.parse_login(200, b"Auth=tok"))
    body = protocol.encode_send(C2dmMessage("r", "c", {"a": "b"}, delay_while_idle=True))
    assert body == b"registration_id=r&collapse_key=c&data.a=b&delay_while_idle=1"
    cases = {
        (200, b"id=0:1"): Action.SENT, (401, b""): Action.REAUTH, (503, b""): Action.BACKOFF,
        (200, b"Error=QuotaExceeded"): Action.QUOTA_STOP,
        (200, b"Error=DeviceQuotaExceeded"): Action.BLACKLIST,
        (200, b"Error=InvalidRegistration"): Action.DROP,
        (200, b"Error=NotRegistered"): Action.DROP, (200, b"Error=MessageTooBig"): Action.DROP,
        (200, b"Error=MissingCollapseKey"): Action.FAIL,
    }
    for (status, text), action in cases.items():
        assert protocol.parse_send(status, text).action is action, text
    answer = protocol.parse_send(503, b"", retry_after="9", update_client_auth="TOKEN-42")
    assert answer.retry_after == 9 and answer.new_auth == "TOKEN-42"
    assert "TOKEN-42" not in repr(answer)
    assert protocol.parse_send(200, b"Error=MessageTooBig").event is None
    assert protocol.parse_send(200, b"Error=NotRegistered").event is TokenEventKind.UNREGISTERED


def test_blacklist_uses_the_clock_it_is_given():
    b = protocol.Blacklist(seconds=3600)
    assert b.add("t", now=100) == 3700
    assert b.until("t", now=3699) == 3700 and b.count(now=3699) == 1
    assert b.until("t", now=3700) is None and b.count(now=3700) == 0


# --- client against the emulator ----------------------------------------------------------

def test_login_then_send(emu, client):
    outcome = client.send(msg(data={"text": "hi & bye"}, delay_while_idle=True)).get(timeout=5)
    assert outcome.ok and outcome.extra["provider_message_id"].startswith("0:")
    login, send = emu.requests
    assert form(login) == {"accountType": "HOSTED_OR_GOOGLE", "Email": EMAIL,
                           "Passwd": PASSWORD, "service": "ac2dm", "source": "ccs-gateway"}
    assert send.header("authorization").startswith("GoogleLogin auth=")
    assert emu.delivered[0].data == {"text": "hi & bye"} and emu.delivered[0].delay_while_idle
    stats = client.stats()
    assert NODE2DM_STATS <= set(stats)
    assert stats["messages_sent"] == 1 and stats["logged_in_to_c2dm"] is True
    assert stats["messages_in_queue"] == 0 and stats["token_age"] >= 0


def test_401_forces_a_new_login(emu, client):
    assert client.send(msg()).get(timeout=5).ok
    emu.expire_auth()
    outcome = client.send(msg()).get(timeout=5)
    assert outcome.ok and outcome.attempts == 2
    assert len(emu.logins) == 2
    assert [r.path for r in emu.requests] == ["/accounts/ClientLogin", "/c2dm/send", "/c2dm/send",
                                              "/accounts/ClientLogin", "/c2dm/send"]


def test_update_client_auth_replaces_the_token(emu, client):
    emu.rotate_auth()
    assert client.send(msg()).get(timeout=5).ok
    assert client.send(msg()).get(timeout=5).ok  # the old token no longer works at the emulator
    sends = emu.requests_to("/c2dm/send")
    assert len(emu.logins) == 1 and len(sends) == 2
    assert sends[0].header("authorization") != sends[1].header("authorization")


def test_503_backs_off_honouring_retry_after(emu, client):
    emu.fail_next(503, retry_after=1)
    pending = client.send(msg())
    wait_until(lambda: client.stats()["backing_off"], what="backing off")
    outcome = pending.get(timeout=5)
    assert outcome.ok and not client.stats()["backing_off"]
    first, second = emu.requests_to("/c2dm/send")
    assert second.at - first.at >= 1.0
    assert client.stats()["total_errors"] == 1


def test_quota_exceeded_writes_the_lock_and_stops(emu, client, tmp_path):
    lock = tmp_path / "quota.lock"
    emu.quota = 1
    results = [client.send(msg(f"t{i}")) for i in range(4)]
    outcomes = [r.get(timeout=5) for r in results]
    assert outcomes[0].ok
    assert [o.error for o in outcomes[1:]] == ["QuotaExceeded"] * 3
    assert all(o.status is Status.FAILED and o.retryable for o in outcomes[1:])
    assert lock.exists() and "QuotaExceeded" in lock.read_text()
    assert len(emu.requests_to("/c2dm/send")) == 2  # queued messages were not sent
    assert not client.healthy() and client.stats()["quota_locked"]
    emu.quota = None
    os.remove(lock)  # the operator's way
    assert client.healthy() and client.send(msg()).get(timeout=5).ok
    lock.write_text("x")
    assert client.send(msg()).get(timeout=5).error == "QuotaExceeded"
    client.resume()  # the API's way
    assert not lock.exists() and client.send(msg()).get(timeout=5).ok


def test_an_existing_lock_keeps_a_new_client_stopped(emu, pki, tmp_path):
    (tmp_path / "quota.lock").write_text("from yesterday")
    c = make_client(emu, pki, tmp_path)
    outcome = c.send(msg()).get(timeout=5)
    c.stop()
    assert outcome.error == "QuotaExceeded" and outcome.attempts == 0 and not emu.requests


def test_device_quota_blacklists_the_token(emu, pki, tmp_path):
    c = make_client(emu, pki, tmp_path, blacklist_seconds=0.3)
    emu.device_quota = 1
    assert c.send(msg("busy")).get(timeout=5).ok
    limited = c.send(msg("busy")).get(timeout=5)
    assert (limited.error, limited.retryable) == ("DeviceQuotaExceeded", True)
    assert [(e.kind, e.token) for e in c.events] == [(TokenEventKind.RATE_LIMITED, "busy")]
    posts = len(emu.requests_to("/c2dm/send"))
    held = c.send(msg("busy")).get(timeout=5)
    assert held.error == "DeviceQuotaExceeded" and held.attempts == 0
    assert held.extra["blacklisted_until"] == limited.extra["blacklisted_until"]
    assert len(emu.requests_to("/c2dm/send")) == posts  # not sent while blacklisted
    assert c.send(msg("other")).get(timeout=5).ok  # other tokens unaffected
    assert c.stats()["rate_limited_tokens"] == 1
    wait_until(lambda: c.stats()["rate_limited_tokens"] == 0, what="blacklist expiry")
    emu.device_quota = None
    assert c.send(msg("busy")).get(timeout=5).ok
    c.stop()


def test_bad_tokens_and_big_messages_are_dropped(emu, client):
    emu.invalid.add("bad")
    emu.unregistered.add("gone")
    emu.script("big", "MessageTooBig")
    outcomes = {t: client.send(msg(t)).get(timeout=5) for t in ("bad", "gone", "big")}
    assert {t: (o.status, o.error, o.retryable) for t, o in outcomes.items()} == {
        "bad": (Status.FAILED, "InvalidRegistration", False),
        "gone": (Status.FAILED, "NotRegistered", False),
        "big": (Status.FAILED, "MessageTooBig", False)}
    assert [(e.kind, e.token) for e in client.events] == [
        (TokenEventKind.INVALID, "bad"), (TokenEventKind.UNREGISTERED, "gone")]
    assert len(emu.requests_to("/c2dm/send")) == 3  # dropped, not retried


class CallbackReceiver(HttpEmulator):
    """The app's end of node2dm's bad-token webhook."""

    def handle(self, request):
        return Reply(200, b"ok")


def test_bad_token_callback_posts_token_body_and_secret(emu, pki, tmp_path):
    with CallbackReceiver(ssl_context=server_context(pki.cert_file, pki.key_file)) as hook:
        c = make_client(emu, pki, tmp_path, callback_url=hook.origin + "/bad-token",
                        callback_secret="hook-secret")
        emu.unregistered.add("gone")
        emu.script("busy", "DeviceQuotaExceeded")
        assert c.send(msg("gone", data={"text": "hello"})).get(timeout=5).error == "NotRegistered"
        assert c.send(msg("busy")).get(timeout=5).error == "DeviceQuotaExceeded"
        wait_until(lambda: len(hook.requests) == 1, what="callback")
        c.stop()
    assert "hook-secret" not in repr(c.config)
    assert len(hook.requests) == 1  # rate limiting is not a bad token
    assert form(hook.requests[0]) == {"device_token": "gone", "message_body": '{"text":"hello"}',
                                      "shared_secret": "hook-secret"}


def test_bad_credentials_fail_the_message_and_never_log_secrets(emu, pki, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    bad = make_client(emu, pki, tmp_path, password="wrong-Passw0rd")
    outcome = bad.send(msg()).get(timeout=5)
    assert (outcome.status, outcome.error) == (Status.FAILED, "BadAuthentication")
    assert not bad.healthy() and bad.stats()["logged_in_to_c2dm"] is False
    bad.stop()
    good = make_client(emu, pki, tmp_path)
    emu.rotate_auth()
    assert good.send(msg()).get(timeout=5).ok
    token = emu.requests_to("/c2dm/send")[0].header("authorization").split("=", 1)[1]
    good.stop()
    text = caplog.text + repr(good) + repr(good.config)
    for secret in ("wrong-Passw0rd", PASSWORD, token):
        assert secret not in text


def test_stop_fails_queued_messages(emu, client):
    emu.fail_next(503, retry_after=60)
    first = client.send(msg("a"))
    second = client.send(msg("b"))
    wait_until(lambda: client.stats()["backing_off"], what="backing off")
    assert client.stats()["messages_in_queue"] == 2
    client.stop(timeout=0.1)
    assert (first.get(timeout=2).status, first.get().error) == (Status.UNKNOWN, "ProviderStopped")
    assert (second.get(timeout=2).status, second.get().attempts) == (Status.FAILED, 0)


def test_config_from_env():
    cfg = C2dmConfig.from_env({"CCS_C2DM_EMAIL": "e@x", "CCS_C2DM_PASSWORD": "pw-secret",
                               "CCS_C2DM_SOURCE": "com.example", "CCS_CA_FILE": "/ca.pem",
                               "CCS_C2DM_URL": "https://h/c2dm/send",
                               "CCS_C2DM_LOGIN_URL": "https://h/accounts/ClientLogin"})
    assert (cfg.email, cfg.source, cfg.ca_file, cfg.url, cfg.login_url) == (
        "e@x", "com.example", "/ca.pem", "https://h/c2dm/send", "https://h/accounts/ClientLogin")
    assert "pw-secret" not in repr(cfg)
    default = C2dmConfig.from_env({"CCS_C2DM_EMAIL": "e@x", "CCS_C2DM_PASSWORD": "p"})
    assert default.url == "https://android.apis.google.com/c2dm/send"
    assert default.login_url == "https://www.google.com/accounts/ClientLogin"
    with pytest.raises(ValueError, match="CCS_C2DM_PASSWORD"):
        C2dmConfig.from_env({"CCS_C2DM_EMAIL": "e@x"})


# --- the emulator's own checks, through a plain HTTP client --------------------------------

def test_emulator_validates_login_and_send(emu, pki):
    http = HttpClient(ca_file=pki.ca_file)
    ctype = {"Content-Type": protocol.FORM_TYPE}

    def login(**fields):
        return http.request("POST", emu.login_url, ctype, urllib.parse.urlencode(fields).encode())

    good = {"accountType": "HOSTED_OR_GOOGLE", "Email": EMAIL, "Passwd": PASSWORD,
            "service": "ac2dm", "source": "s"}
    assert login(**{**good, "service": "mail"}).status == 400
    refused = login(**{**good, "Passwd": "nope"})
    assert (refused.status, refused.body) == (403, b"Error=BadAuthentication")
    auth = protocol.parse_login(200, login(**good).body).auth

    def send(body, token=auth):
        return http.request("POST", emu.url, protocol.auth_header(token), body)

    assert send(b"registration_id=r&collapse_key=c", token="forged").status == 401
    assert send(b"registration_id=r").body == b"Error=MissingCollapseKey"
    assert send(b"collapse_key=c").body == b"Error=MissingRegistration"
    big = urllib.parse.urlencode({"registration_id": "r", "collapse_key": "c",
                                  "data.k": "x" * 1024}).encode()
    assert send(big).body == b"Error=MessageTooBig"
    assert send(b"registration_id=r&collapse_key=c").body.startswith(b"id=")
    http.close()
