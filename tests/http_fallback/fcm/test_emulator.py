"""The FCM emulator answers like FCM: raw HTTP requests over TLS, and `ccs emulate fcm`."""

import json
import signal
import subprocess
import sys

import pytest

from ccs.transport.http11 import HttpClient
from http_fallback.fcm import Message
from http_fallback.fcm.emulator import FcmEmulator
from tests.fcm_helpers import client_for
from tests.helpers import ROOT, ccs_env


@pytest.fixture
def emu(pki):
    with FcmEmulator(pki, "proj-e") as emulator:
        yield emulator


@pytest.fixture
def raw(emu, pki):
    """POST a raw JSON body to the send endpoint with a valid access token."""
    client = client_for(emu, pki)
    token = client._tokens.get()
    http = HttpClient(ca_file=pki.ca_file)

    def post(body, path=None, auth=True):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return http.request("POST", path or emu.send_url, headers, data)

    yield post
    http.close()
    client.stop()


def _violation(response):
    error = response.json()["error"]
    fields = [v["field"] for d in error.get("details", []) for v in d.get("fieldViolations", [])]
    return error["status"], fields


@pytest.mark.parametrize("message,field", [
    ({"token": "t", "data": {"a": "1", "b": 2}}, "message.data[1].value"),
    ({"token": "t", "topic": "x"}, "message"),
    ({"data": {"a": "1"}}, "message"),
    ({"token": "t", "android": {"ttl": "1h"}}, "message.android.ttl"),
    ({"token": "t", "android": {"ttl": 3600}}, "message.android.ttl"),
    ({"token": "t", "android": {"ttl": "2419201s"}}, "message.android.ttl"),
    ({"token": "t", "android": {"priority": "urgent"}}, "message.android.priority"),
    ({"token": "t", "android": {"notification": {"color": "#12345"}}},
     "message.android.notification.color"),
    ({"token": "t", "android": {"notification": {"body_loc_args": ["a"]}}},
     "message.android.notification.body_loc_key"),
    ({"token": "t", "android": {"bogus": 1}}, "message.android"),
    ({"token": "t", "webpush": {"fcm_options": {"link": "http://x"}}},
     "message.webpush.fcm_options.link"),
    ({"token": "t", "apns": {"headers": {"apns-priority": 10}}}, "message.apns.headers[0].value"),
    ({"token": "t", "data": {"from": "x"}}, "message.data"),
    ({"token": "not a token!"}, "message.token"),
    ({"topic": "a b"}, "message.topic"),
    ({"condition": "'a' in topics && 'b' in topics || 'c' in topics && 'd' in topics "
                   "|| 'e' in topics || 'f' in topics"}, "message.condition"),
    ({"topic": "t", "data": {"k": "v" * 2100}}, "message"),
    ({"token": "t", "fcm_options": {"analytics_label": "x" * 51}},
     "message.fcm_options.analytics_label"),
])
def test_invalid_messages_get_field_violations(raw, emu, message, field):
    response = raw({"message": message})
    assert response.status == 400
    status, fields = _violation(response)
    assert status == "INVALID_ARGUMENT" and fields == [field]
    assert emu.messages_accepted == 0


def test_a_valid_message_gets_a_name(raw):
    response = raw({"message": {"token": "abc:DEF-1_2", "data": {"a": "b"},
                                "android": {"ttl": "0.5s", "priority": "high"}}})
    assert response.status == 200
    assert response.json() == {"name": "projects/proj-e/messages/0:1"}


def test_auth_and_project_are_checked(raw, emu):
    body = {"message": {"token": "t"}}
    response = raw(body, auth=False)
    assert response.status == 401 and response.json()["error"]["status"] == "UNAUTHENTICATED"
    response = raw(body, path=f"{emu.url}/v1/projects/other/messages:send")
    assert response.status == 403
    assert raw(b"{not json").status == 400
    assert raw(body, path=f"{emu.url}/v2/nothing").status == 404


def test_scripted_failures_carry_the_fcm_error_shape(raw, emu):
    emu.fail("t", "quota", times=1, retry_after=7)
    response = raw({"message": {"token": "t"}})
    assert response.status == 429 and response.headers["retry-after"] == "7"
    details = response.json()["error"]["details"]
    assert {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": "QUOTA_EXCEEDED"} in details
    assert raw({"message": {"token": "t"}}).status == 200  # only once
    with pytest.raises(ValueError):
        emu.fail("t", "no-such-failure")


def test_iid_batch_api(emu, pki):
    client = client_for(emu, pki)
    token = client._tokens.get()
    http = HttpClient(ca_file=pki.ca_file)
    body = json.dumps({"to": "/topics/x", "registration_tokens": ["a"]}).encode()
    headers = {"Authorization": f"Bearer {token}"}
    assert http.request("POST", f"{emu.url}/iid/v1:batchAdd", headers, body).status == 401
    headers["access_token_auth"] = "true"
    assert http.request("POST", f"{emu.url}/iid/v1:batchAdd", headers, body).status == 200
    many = json.dumps({"to": "/topics/x", "registration_tokens": ["a"] * 1001}).encode()
    assert http.request("POST", f"{emu.url}/iid/v1:batchAdd", headers, many).status == 400
    client.stop()


def test_client_topic_management_in_batches_of_1000(emu, pki):
    client = client_for(emu, pki)
    tokens = [f"sub{i}" for i in range(2500)]
    emu.fail("sub1500", "unregistered")
    emu.fail("sub7", "invalid")
    results = client.subscribe("/topics/sports", tokens)
    assert [r.token for r in results] == tokens
    assert {r.token: r.error for r in results if not r.ok} == {
        "sub7": "INVALID_ARGUMENT", "sub1500": "NOT_FOUND"}
    assert len([s for s in emu.seen if s.path == "/iid/v1:batchAdd"]) == 3
    assert len(emu.topics["sports"]) == 2498
    removed = client.unsubscribe("sports", tokens[:10])
    assert [r.ok for r in removed] == [True] * 7 + [False] + [True] * 2
    assert len(emu.topics["sports"]) == 2489
    with pytest.raises(ValueError, match="topic"):
        client.subscribe("bad topic", ["a"])
    client.stop()


def test_ccs_emulate_fcm_serves_until_sigterm(pki, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "ccs", "emulate", "fcm", "--project", "p9",
                             "--dir", str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env=ccs_env(), cwd=ROOT)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["project"] == "p9" and info["url"] == f"https://127.0.0.1:{info['port']}"
        from http_fallback.fcm import FcmClient, FcmConfig

        client = FcmClient(FcmConfig.from_env({
            "CCS_FCM_CREDENTIALS": info["credentials"], "CCS_FCM_URL": info["url"],
            "CCS_CA_FILE": info["ca_file"], "CCS_FCM_CONCURRENCY": "4"}))
        assert client.project_id == "p9"
        outcome = client.send(Message(token="from-a-test")).get(20)
        assert outcome.ok and outcome.message_id == "projects/p9/messages/0:1"
        client.stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
