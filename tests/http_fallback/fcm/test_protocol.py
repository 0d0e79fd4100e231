"""The pure FCM v1 core: no sockets, no clock but the one handed in."""

import datetime
import email.utils
import json

import pytest

from http_fallback.fcm import AndroidConfig, FcmConfig, Message, MessageError
from http_fallback.fcm.model import duration
from http_fallback.fcm.protocol import (
    Action,
    FcmRetryPolicy,
    RetryPolicy,
    assertion_claims,
    classify,
    parse_error,
    parse_retry_after,
    parse_token_answer,
    parse_topic_results,
    send_body,
)


def _body(status, code=None, violations=(), message="m"):
    details = []
    if code:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                        "errorCode": code})
    if violations:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": f, "description": "d"}
                                            for f in violations]})
    return json.dumps({"error": {"code": 400, "message": message, "status": status,
                                 "details": details}}).encode()


def test_error_code_comes_from_details_before_status():
    info = parse_error(404, _body("NOT_FOUND", "UNREGISTERED"), None, 0)
    assert info.code == "UNREGISTERED" and info.status == "NOT_FOUND"
    info = parse_error(400, _body("INVALID_ARGUMENT", None, ["message.data[0].value"]), None, 0)
    assert info.code == "INVALID_ARGUMENT" and info.violations == (("message.data[0].value",
                                                                    "d"),)
    assert parse_error(502, b"<html>bad gateway</html>", None, 0).code == "UNAVAILABLE"
    assert parse_error(429, b"", "12", 0).retry_after == 12.0


def test_retry_after_as_an_http_date():
    now = 1_700_000_000.0
    text = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(text, now) == pytest.approx(30)
    assert parse_retry_after("nonsense", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize("status,code,violations,message,to_token,action,event", [
    (404, "UNREGISTERED", (), "m", True, Action.DEAD_TOKEN, "unregistered"),
    (400, "INVALID_ARGUMENT", ("message.token",), "m", True, Action.DEAD_TOKEN, "invalid"),
    (400, "INVALID_ARGUMENT", (), "The registration token is not a valid FCM registration token",
     True, Action.DEAD_TOKEN, "invalid"),
    (400, None, ("message.data[0].value",), "m", True, Action.BAD_MESSAGE, None),
    (400, "INVALID_ARGUMENT", ("message.android.restricted_package_name",), "m", True,
     Action.BAD_MESSAGE, None),
    (400, "INVALID_ARGUMENT", ("message.token",), "m", False, Action.BAD_MESSAGE, None),
    (403, "SENDER_ID_MISMATCH", (), "m", True, Action.CREDENTIALS, None),
    (429, "QUOTA_EXCEEDED", (), "m", True, Action.RETRY, "rate_limited"),
    (503, "UNAVAILABLE", (), "m", True, Action.RETRY, None),
    (500, "INTERNAL", (), "m", True, Action.RETRY, None),
    (401, "THIRD_PARTY_AUTH_ERROR", (), "m", True, Action.CREDENTIALS, None),
    (401, None, (), "m", True, Action.REAUTH, None),
    (403, None, (), "m", True, Action.CREDENTIALS, None),
])
def test_classification(status, code, violations, message, to_token, action, event):
    grpc = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
            404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
            503: "UNAVAILABLE"}[status]
    info = parse_error(status, _body(grpc, code, violations, message), None, 0)
    decision = classify(info, to_token)
    assert (decision.action, decision.token_event) == (action, event)


def test_sender_id_mismatch_as_dead_token_when_configured():
    info = parse_error(403, _body("PERMISSION_DENIED", "SENDER_ID_MISMATCH"), None, 0)
    assert classify(info, True, sender_mismatch_is_dead=True).token_event == "invalid"


def test_backoff_doubles_with_jitter_and_respects_retry_after():
    assert RetryPolicy is FcmRetryPolicy  # the old import path still works
    policy = FcmRetryPolicy(base_delay=1.0, max_delay=10.0, jitter=0.5, quota_delay=60.0)
    assert [policy.delay(n, "UNAVAILABLE", None, 0.0) for n in (1, 2, 3, 4, 5)] == \
        [1.0, 2.0, 4.0, 8.0, 10.0]
    assert policy.delay(1, "UNAVAILABLE", None, 0.999) == pytest.approx(1.4995)
    assert policy.delay(1, "UNAVAILABLE", 30.0, 0.0) == 30.0
    assert policy.delay(1, "QUOTA_EXCEEDED", None, 0.0) == 60.0
    assert policy.delay(1, "QUOTA_EXCEEDED", 5.0, 0.0) == 5.0


def test_assertion_claims_and_token_answer():
    claims = assertion_claims("sa@p.iam.gserviceaccount.com", "https://t/token", 1000.7)
    assert claims == {"iss": "sa@p.iam.gserviceaccount.com", "aud": "https://t/token",
                      "scope": "https://www.googleapis.com/auth/firebase.messaging",
                      "iat": 1000, "exp": 4600}
    token = parse_token_answer(b'{"access_token": "ya29.secret", "expires_in": 3600}', 0, 225)
    assert (token.expires_at, token.refresh_at) == (3600, 3375)
    assert "secret" not in repr(token)
    short = parse_token_answer(b'{"access_token": "x", "expires_in": 100}', 0, 225)
    assert short.refresh_at == 50
    with pytest.raises(ValueError):
        parse_token_answer(b'{"expires_in": 5}', 0, 225)


def test_topic_results_in_order():
    assert parse_topic_results(b'{"results": [{}, {"error": "NOT_FOUND"}]}', 2) == \
        [None, "NOT_FOUND"]
    with pytest.raises(ValueError):
        parse_topic_results(b'{"results": [{}]}', 2)


def test_model_wire_form():
    assert duration(3600) == "3600s" and duration(1.5) == "1.5s"
    assert duration(datetime.timedelta(minutes=2)) == "120s"
    wire = Message(token="t", android=AndroidConfig(ttl=0.25, priority="HIGH")).to_json()
    assert wire == {"token": "t", "android": {"ttl": "0.25s", "priority": "HIGH"}}
    assert json.loads(send_body(wire, validate_only=True)) == {"message": wire,
                                                               "validate_only": True}
    assert Message.from_json({"topic": "x"}).topic == "x"
    with pytest.raises(ValueError, match="message.tokn"):
        Message.from_json({"tokn": "x"})


def test_config_from_env_names_bad_variables(tmp_path):
    env = {"CCS_FCM_CREDENTIALS": "/x.json", "CCS_FCM_PROJECT": "p",
           "CCS_FCM_URL": "https://127.0.0.1:9", "CCS_FCM_CONCURRENCY": "7",
           "CCS_CA_FILE": "/ca.pem"}
    config = FcmConfig.from_env(env)
    assert (config.credentials_file, config.project_id, config.base_url, config.concurrency,
            config.ca_file) == ("/x.json", "p", "https://127.0.0.1:9", 7, "/ca.pem")
    with pytest.raises(ValueError, match="CCS_FCM_CONCURRENCY"):
        FcmConfig.from_env({**env, "CCS_FCM_CONCURRENCY": "many"})
    with pytest.raises(ValueError, match="concurrency"):
        FcmConfig.from_env({**env, "CCS_FCM_CONCURRENCY": "0"})
    assert FcmConfig.from_env({**env, "CCS_FCM_CONNECTIONS": "6"}).connections == 6
    assert FcmConfig.from_env(env).connections == 8 and FcmConfig.from_env(env).http2
    with pytest.raises(ValueError, match="CCS_FCM_CONNECTIONS"):
        FcmConfig.from_env({**env, "CCS_FCM_CONNECTIONS": "lots"})
    with pytest.raises(ValueError, match="connections"):
        FcmConfig.from_env({**env, "CCS_FCM_CONNECTIONS": "0"})
    with pytest.raises(ValueError, match="http2"):
        FcmConfig("/x.json", http2="no")
    with pytest.raises(ValueError, match="CCS_FCM_CREDENTIALS"):
        FcmConfig.from_env({})
    with pytest.raises(ValueError, match="CCS_FCM_TYPO"):
        FcmConfig.from_env({**env, "CCS_FCM_TYPO": "1"})
    with pytest.raises(ValueError, match="base_url"):
        FcmConfig("/x.json", base_url="ftp://x")
    with pytest.raises(ValueError, match="iid_url: plain http is allowed on loopback only"):
        FcmConfig("/x.json", iid_url="http://iid.example.com")
    assert FcmConfig("/x.json", base_url="http://127.0.0.1:8080").base_url
    with pytest.raises(ValueError, match="retry_deadline"):
        FcmConfig.from_dict({"credentials_file": "/x", "retry_deadline": -1})
    with pytest.raises(ValueError, match="colour"):
        FcmConfig.from_dict({"credentials_file": "/x", "colour": 1})


def test_message_error_is_a_value_error_with_the_field():
    e = MessageError("message.data.x", "must be a string")
    assert isinstance(e, ValueError) and str(e) == "message.data.x: must be a string"
