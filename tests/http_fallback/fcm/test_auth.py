"""OAuth2 access tokens for FCM: fetch, refresh, sharing, and the emulator's checks."""

import json
import time

import gevent
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ccs.outcome import Status
from ccs.transport.http11 import HttpClient
from http_fallback.fcm import Message
from http_fallback.fcm.auth import AuthError, ServiceAccount, TokenSource
from http_fallback.fcm.emulator import FcmEmulator
from tests.fcm_helpers import client_for, sends
from tests.helpers import wait_until


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


@pytest.fixture
def emu(pki):
    with FcmEmulator(pki, "proj-a") as emulator:
        yield emulator


def test_token_is_fetched_once_and_reused(emu, pki):
    c = client_for(emu, pki)
    for i in range(5):
        assert c.send(Message(token=f"t{i}")).get(10).ok
    assert emu.tokens_issued == 1
    token_requests = [s for s in emu.seen if s.path == "/token"]
    assert len(token_requests) == 1 and token_requests[0].status == 200
    c.stop()


def test_token_refreshed_early_in_background_then_when_expired(pki):
    clock = Clock()
    with FcmEmulator(pki, "proj-a", clock=clock) as emu:
        c = client_for(emu, pki, clock=clock, refresh_margin=300)
        assert c.send(Message(token="a")).get(10).ok
        assert emu.tokens_issued == 1
        clock.now += 3600 - 200  # inside the refresh margin: old token still used
        assert c.send_each([Message(token=f"b{i}") for i in range(30)]).success_count == 30
        # The emulator counts the token when it answers; the client when it has read it.
        wait_until(lambda: emu.tokens_issued == 2 and c.stats()["token_fetches"] == 2,
                   what="background refresh")
        assert all(s.status == 200 for s in emu.seen)
        clock.now += 3600 + 10  # past expiry of the second token: wait for a new one
        assert c.send(Message(token="c")).get(10).ok
        assert emu.tokens_issued == 3
        assert all(s.status == 200 for s in emu.seen)
        c.stop()


def test_a_failing_background_refresh_keeps_the_old_token_without_a_storm(pki):
    clock = Clock()
    with FcmEmulator(pki, "proj-a", clock=clock) as emu:
        c = client_for(emu, pki, clock=clock, refresh_margin=300)
        assert c.send(Message(token="a")).get(10).ok
        emu.keys.clear()  # the token endpoint now refuses our assertion
        clock.now += 3600 - 200
        for i in range(20):
            assert c.send(Message(token=f"b{i}")).get(10).ok
        token_requests = [s for s in emu.seen if s.path == "/token"]
        assert [s.status for s in token_requests] == [200, 400]
        c.stop()


def test_fifty_greenlets_share_one_fetch(emu, pki):
    c = client_for(emu, pki, concurrency=50)
    jobs = [gevent.spawn(lambda i=i: c.send(Message(token=f"g{i}")).get(10)) for i in range(50)]
    gevent.joinall(jobs, raise_error=True)
    assert all(j.value.ok for j in jobs)
    assert emu.tokens_issued == 1
    c.stop()


def test_token_source_directly_under_fifty_greenlets(emu, pki):
    source = TokenSource(ServiceAccount.load(emu.credentials_file), HttpClient(ca_file=pki.ca_file))
    jobs = [gevent.spawn(source.get) for _ in range(50)]
    gevent.joinall(jobs, raise_error=True)
    assert len({j.value for j in jobs}) == 1
    assert source.fetches == 1 and emu.tokens_issued == 1


def test_a_401_forces_one_refresh_and_one_retry(emu, pki):
    c = client_for(emu, pki, concurrency=20)
    assert c.send(Message(token="warm")).get(10).ok
    emu.revoke_tokens()
    result = c.send_each([Message(token=f"r{i}") for i in range(20)])
    assert all(o.ok and o.attempts == 2 for o in result)
    assert emu.tokens_issued == 2  # one refresh for all twenty refusals
    assert [s.status for s in sends(emu, "r0")] == [401, 200]
    c.stop()


def test_a_persistent_401_fails_after_one_refresh(emu, pki):
    c = client_for(emu, pki)
    emu.fail("locked", "unauthenticated")
    outcome = c.send(Message(token="locked")).get(10)
    assert outcome.status is Status.FAILED and outcome.error == "UNAUTHENTICATED"
    assert outcome.attempts == 2 and len(sends(emu, "locked")) == 2
    assert emu.tokens_issued == 2
    c.stop()


def test_untrusted_key_is_refused_and_reported(emu, pki, tmp_path):
    info = json.loads(open(emu.credentials_file).read())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from cryptography.hazmat.primitives import serialization

    info["private_key"] = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(info))
    c = client_for(emu, pki, credentials_file=str(path), concurrency=4)
    result = c.send_each([Message(token=f"x{i}") for i in range(40)])
    assert all(o.status is Status.FAILED and o.error == "AUTH_ERROR" for o in result)
    assert "Invalid JWT Signature" in result[0].description
    assert not c.healthy() and sends(emu) == []
    # refused credentials are asked about once, not once per message
    assert len([s for s in emu.seen if s.path == "/token"]) == 1
    c.stop()


def _token_request(emu, pki, claims, key_file=None, headers=None):
    info = json.loads(open(key_file or emu.credentials_file).read())
    assertion = jwt.encode(claims, info["private_key"], algorithm="RS256",
                           headers=headers or {"kid": info["private_key_id"]})
    body = f"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    return HttpClient(ca_file=pki.ca_file).request(
        "POST", emu.token_uri, {"Content-Type": "application/x-www-form-urlencoded"},
        body.encode())


@pytest.mark.parametrize("change,error", [
    ({}, None),
    ({"aud": "https://example.com/token"}, "invalid_grant"),
    ({"scope": "https://www.googleapis.com/auth/userinfo.email"}, "invalid_scope"),
    ({"exp_extra": 7200}, "invalid_grant"),
    ({"iat_shift": -7200}, "invalid_grant"),
    ({"iss": "someone@else.example"}, "invalid_grant"),
])
def test_emulator_checks_the_assertion(emu, pki, change, error):
    info = json.loads(open(emu.credentials_file).read())
    now = int(time.time()) + change.pop("iat_shift", 0)
    claims = {"iss": info["client_email"], "aud": emu.token_uri, "iat": now,
              "exp": now + 3600 + change.pop("exp_extra", 0),
              "scope": "https://www.googleapis.com/auth/firebase.messaging", **change}
    response = _token_request(emu, pki, claims)
    if error is None:
        answer = response.json()
        assert response.status == 200 and answer["token_type"] == "Bearer"
        assert answer["expires_in"] == 3600 and answer["access_token"]
    else:
        assert response.status == 400 and response.json()["error"] == error


def test_emulator_accepts_googles_audience_as_google_auth_sends_it(emu, pki):
    info = json.loads(open(emu.credentials_file).read())
    now = int(time.time())
    claims = {"iss": info["client_email"], "aud": "https://oauth2.googleapis.com/token",
              "iat": now, "exp": now + 3600,
              "scope": "https://www.googleapis.com/auth/cloud-platform "
                       "https://www.googleapis.com/auth/firebase.messaging"}
    assert _token_request(emu, pki, claims).status == 200


def test_service_account_file_errors_name_the_field(tmp_path):
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({"type": "service_account", "client_email": "a@b"}))
    with pytest.raises(ValueError, match="private_key"):
        ServiceAccount.load(str(path))
    with pytest.raises(ValueError, match="not JSON"):
        path.write_text("{")
        ServiceAccount.load(str(path))
    path.write_text(json.dumps({"client_email": "a@b", "private_key": "k",
                                "token_uri": "http://oauth.example.com/token"}))
    with pytest.raises(ValueError, match="token_uri plain http"):
        ServiceAccount.load(str(path))
    with pytest.raises(ValueError, match="No such file"):
        ServiceAccount.load(str(tmp_path / "missing.json"))


def test_token_endpoint_down_is_retryable(pki, tmp_path):
    with FcmEmulator(pki) as emu:
        path = emu.credentials_file
    with pytest.raises(AuthError) as e:
        TokenSource(ServiceAccount.load(path), HttpClient(ca_file=pki.ca_file)).get()
    assert e.value.retryable
