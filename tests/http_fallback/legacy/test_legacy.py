"""Legacy GCM/FCM HTTP: the pure core, and LegacyClient against LegacyEmulator over TLS."""

from __future__ import annotations

import email.utils
import json

import pytest

from ccs.outcome import Status, TokenEventKind
from ccs.transport.http11 import HttpClient
from ccs.transport.tls import server_context
from http_fallback.legacy import protocol
from http_fallback.legacy.client import LegacyClient, LegacyConfig
from http_fallback.legacy.emulator import LegacyEmulator
from http_fallback.legacy.model import LegacyMessage, MessageError
from http_fallback.retry_policy import Backoff, parse_retry_after
from tests.helpers import wait_until

KEY = "test-server-key"
FAST = Backoff(initial=0.02, factor=2.0, jitter=0.0, attempts=4)


@pytest.fixture
def emu(pki):
    with LegacyEmulator(KEY, ssl_context=server_context(pki.cert_file, pki.key_file)) as e:
        yield e


def make_client(emu, pki, **kw):
    cfg = LegacyConfig(server_key=kw.pop("server_key", KEY), url=emu.url, ca_file=pki.ca_file,
                       backoff=kw.pop("backoff", FAST), **kw)
    client = LegacyClient(cfg)
    events = []
    client.token_events.add(events.append)
    client.start()
    return client, events


@pytest.fixture
def client(emu, pki):
    c, events = make_client(emu, pki)
    c.events = events
    yield c
    c.stop(timeout=1)


def sent_json(emu, index=-1):
    return json.loads(emu.requests_to("/fcm/send")[index].body)


# --- pure core ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    ({}, "to"),
    ({"to": "a", "condition": "'x' in topics"}, "to"),
    ({"registration_ids": []}, "registration_ids"),
    ({"registration_ids": ["a"] * 1001}, "registration_ids"),
    ({"registration_ids": "abc"}, "registration_ids"),
    ({"registration_ids": ["a", ""]}, "registration_ids[1]"),
    ({"to": "a", "time_to_live": 2_419_201}, "time_to_live"),
    ({"to": "a", "time_to_live": True}, "time_to_live"),
    ({"to": "a", "priority": "urgent"}, "priority"),
    ({"to": "a", "delay_while_idle": "yes"}, "delay_while_idle"),
    ({"to": "a", "data": ["x"]}, "data"),
])
def test_message_errors_name_the_field(kwargs, field):
    with pytest.raises(MessageError) as info:
        LegacyMessage(**kwargs)
    assert str(info.value).startswith(f"{field}:")


def test_json_carries_every_table_1_option():
    msg = LegacyMessage(registration_ids=["a", "b"], collapse_key="ck", priority="high",
                        content_available=True, mutable_content=False, delay_while_idle=True,
                        time_to_live=60, restricted_package_name="com.example", dry_run=True,
                        data={"k": "v"}, notification={"title": "t"})
    doc = json.loads(protocol.encode_json(msg))
    assert doc == {"registration_ids": ["a", "b"], "collapse_key": "ck", "priority": "high",
                   "content_available": True, "mutable_content": False,
                   "delay_while_idle": True, "time_to_live": 60,
                   "restricted_package_name": "com.example", "dry_run": True,
                   "data": {"k": "v"}, "notification": {"title": "t"}}
    assert msg.id not in protocol.encode_json(msg).decode()


def test_plain_text_form_and_answers():
    msg = LegacyMessage(to="tok", collapse_key="c k", delay_while_idle=True, time_to_live=5,
                        data={"score": "3x1", "ü": "&="})
    form = protocol.encode_form(msg).decode()
    assert form == ("registration_id=tok&collapse_key=c+k&delay_while_idle=1&time_to_live=5"
                    "&data.score=3x1&data.%C3%BC=%26%3D")
    with pytest.raises(MessageError, match="^to:"):
        protocol.encode_form(LegacyMessage(registration_ids=["a", "b"]))
    with pytest.raises(MessageError, match=r"^data\.n:"):
        protocol.encode_form(LegacyMessage(to="t", data={"n": 1}))
    ok = protocol.parse_answer(msg, 200, b"id=0:1%x\nregistration_id=new\n", plain_text=True)
    assert ok.results == (protocol.TokenResult("tok", "0:1%x", "new"),)
    err = protocol.parse_answer(msg, 200, b"Error=NotRegistered", plain_text=True)
    assert protocol.judge(err, 1)[0].event is TokenEventKind.UNREGISTERED


def test_judging_results_and_whole_answers():
    msg = LegacyMessage(registration_ids=["a", "b", "c", "d"])
    body = json.dumps({"multicast_id": 1, "success": 2, "failure": 2, "canonical_ids": 1,
                       "results": [{"message_id": "1"}, {"message_id": "2", "registration_id": "B"},
                                   {"error": "Unavailable"}, {"error": "InvalidRegistration"}]})
    verdicts = protocol.judge(protocol.parse_answer(msg, 200, body.encode()), 4)
    assert [v.status for v in verdicts] == [Status.OK, Status.OK, Status.FAILED, Status.FAILED]
    assert verdicts[1].canonical_id == "B" and verdicts[1].event is TokenEventKind.CANONICAL
    assert verdicts[2].retryable and not verdicts[3].retryable
    assert verdicts[3].event is TokenEventKind.INVALID
    short = protocol.parse_answer(msg, 200, b'{"results": [{"message_id": "1"}]}')
    assert short.kind is protocol.AnswerKind.UNEXPECTED
    assert protocol.judge(short, 4)[0].status is Status.UNKNOWN
    five = protocol.parse_answer(msg, 503, b"", retry_after="7")
    assert five.retry_after == 7 and all(v.retryable for v in protocol.judge(five, 4))
    assert not protocol.judge(protocol.parse_answer(msg, 401, b""), 4)[0].retryable


def test_retry_after_forms_and_backoff():
    assert parse_retry_after("120", now=0) == 120
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(30)
    assert parse_retry_after("soon", now=0) is None
    b = Backoff(initial=1, maximum=10, factor=2, jitter=0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
    assert b.delay(1, retry_after=30) == 30


# --- client against the emulator ----------------------------------------------------------

def test_multicast_results_in_input_order_with_retry_of_the_failed_subset(emu, client):
    emu.canonical["b"] = "B"
    emu.unregistered.add("c")
    emu.invalid.add("e")
    emu.script("d", "Unavailable", "InternalServerError")
    results = client.send_multicast(LegacyMessage(registration_ids=list("abcde"),
                                                  data={"x": "1"}))
    outcomes = [r.get(timeout=5) for r in results]
    assert [o.to for o in outcomes] == list("abcde")
    assert [o.status for o in outcomes] == [Status.OK, Status.OK, Status.FAILED, Status.OK,
                                            Status.FAILED]
    assert [o.error for o in outcomes] == [None, None, "NotRegistered", None,
                                           "InvalidRegistration"]
    assert outcomes[1].canonical_id == "B" and outcomes[3].attempts == 3
    assert [sent_json(emu, i)["registration_ids"] for i in range(3)] == [
        list("abcde"), ["d"], ["d"]]
    kinds = {(e.token, e.kind, e.new_token) for e in client.events}
    assert kinds == {("b", TokenEventKind.CANONICAL, "B"), ("c", TokenEventKind.UNREGISTERED, None),
                     ("e", TokenEventKind.INVALID, None)}


def test_5xx_honours_retry_after(emu, client):
    emu.fail_next(503, retry_after=1)
    outcome = client.send(LegacyMessage(to="tok")).get(timeout=5)
    assert outcome.ok and outcome.attempts == 2
    first, second = emu.requests
    assert second.at - first.at >= 1.0


def test_retry_after_on_a_200_with_unavailable_results(emu, client):
    emu.script("d", "Unavailable")
    emu.retry_after_on_unavailable = 1
    outcomes = [r.get(timeout=5) for r in client.send_multicast(
        LegacyMessage(registration_ids=["a", "d"]))]
    assert [o.ok for o in outcomes] == [True, True]
    first, second = emu.requests
    assert second.at - first.at >= 1.0


def test_no_retry_after_the_time_to_live(emu, client):
    emu.fail_next(503, retry_after=30)
    outcome = client.send(LegacyMessage(to="tok", time_to_live=2)).get(timeout=5)
    assert (outcome.status, outcome.error, outcome.attempts) == (Status.EXPIRED, "Expired", 1)
    assert len(emu.requests) == 1
    emu.script("t0", "Unavailable")
    now_or_never = client.send(LegacyMessage(to="t0", time_to_live=0)).get(timeout=5)
    assert now_or_never.status is Status.EXPIRED


def test_exponential_backoff_then_retries_used_up(emu, client):
    emu.fail_next(500, times=10)
    outcome = client.send(LegacyMessage(to="tok")).get(timeout=5)
    assert outcome.status is Status.FAILED and outcome.retryable
    assert outcome.error == "Unavailable" and outcome.attempts == FAST.attempts
    times = [r.at for r in emu.requests]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 3
    for gap, floor in zip(gaps, (0.02, 0.04, 0.08), strict=True):
        assert gap >= floor


def test_401_and_400_are_final(emu, pki):
    bad, _ = make_client(emu, pki, server_key="wrong")
    outcome = bad.send(LegacyMessage(to="tok")).get(timeout=5)
    assert (outcome.status, outcome.error, outcome.attempts) == (Status.FAILED, "Unauthorized", 1)
    assert not bad.healthy()
    bad.stop()
    good, _ = make_client(emu, pki)
    emu.fail_next(400)
    outcome = good.send(LegacyMessage(to="tok")).get(timeout=5)
    assert (outcome.error, outcome.retryable) == ("InvalidJson", False)
    good.stop()


def test_tls_is_verified(emu):
    untrusting = LegacyClient(LegacyConfig(server_key=KEY, url=emu.url,
                                           backoff=Backoff(attempts=1)))
    untrusting.start()
    outcome = untrusting.send(LegacyMessage(to="tok")).get(timeout=5)
    untrusting.stop()
    assert (outcome.error, outcome.retryable) == ("ConnectionError", True)
    assert "tls" in outcome.description.lower() or "certificate" in outcome.description.lower()
    assert not emu.requests and not untrusting.healthy()


def test_plain_text_client(emu, pki):
    c, events = make_client(emu, pki, plain_text=True)
    emu.canonical["old"] = "new"
    emu.unregistered.add("gone")
    ok = c.send(LegacyMessage(to="old", collapse_key="ck", data={"a": "b"})).get(timeout=5)
    gone = c.send(LegacyMessage(to="gone", data={"a": "b"})).get(timeout=5)
    c.stop()
    assert ok.ok and ok.canonical_id == "new"
    assert gone.error == "NotRegistered"
    seen = emu.requests[0]
    assert seen.header("content-type") == protocol.FORM_TYPE
    assert b"data.a=b" in seen.body and b"registration_id=old" in seen.body
    assert [e.kind for e in events] == [TokenEventKind.CANONICAL, TokenEventKind.UNREGISTERED]


def test_topics_conditions_and_table_11_errors(emu, client):
    assert client.send(LegacyMessage(to="/topics/news")).get(timeout=5).ok
    assert client.send(LegacyMessage(condition="'a' in topics && 'b' in topics")).get(5).ok
    emu.script("/topics/busy", "TopicsMessageRateExceeded")
    busy = client.send(LegacyMessage(to="/topics/busy")).get(timeout=5)
    assert (busy.error, busy.retryable) == ("TopicsMessageRateExceeded", False)
    reserved = client.send(LegacyMessage(to="t", data={"from": "x"})).get(timeout=5)
    assert reserved.error == "InvalidDataKey"
    big = client.send(LegacyMessage(to="t", data={"k": "x" * 4096})).get(timeout=5)
    assert big.error == "MessageTooBig"
    emu.script("hot", "DeviceMessageRateExceeded")
    hot = client.send(LegacyMessage(to="hot")).get(timeout=5)
    assert hot.error == "DeviceMessageRateExceeded" and not hot.retryable
    assert client.events[-1].kind is TokenEventKind.RATE_LIMITED
    dry = client.send(LegacyMessage(to="t", dry_run=True)).get(timeout=5)
    assert dry.extra["provider_message_id"] == "fake_message_id"


def test_device_group_partial_and_total_failure(emu, client):
    emu.add_group("group-key", ["m1", "m2", "m3"])
    emu.unregistered.add("m2")
    partial = client.send(LegacyMessage(notification_key="group-key")).get(timeout=5)
    assert partial.ok and partial.extra["failed_registration_ids"] == ["m2"]
    assert (partial.extra["success"], partial.extra["failure"]) == (2, 1)
    emu.add_group("dead", ["x1"])
    emu.unregistered.add("x1")
    dead = client.send(LegacyMessage(to="dead")).get(timeout=5)
    assert (dead.status, dead.error, dead.attempts) == (Status.FAILED, "DeviceGroupFailed", 4)


def test_stop_resolves_in_flight_and_later_sends(emu, client):
    emu.fail_next(503, retry_after=60)
    pending = client.send(LegacyMessage(to="tok"))
    wait_until(lambda: len(emu.requests) == 1, what="first request")
    client.stop(timeout=0.1)
    outcome = pending.get(timeout=2)
    assert (outcome.status, outcome.error) == (Status.UNKNOWN, "ProviderStopped")
    late = client.send(LegacyMessage(to="tok")).get(timeout=1)
    assert (late.status, late.error, late.attempts) == (Status.FAILED, "ProviderStopped", 0)


def test_send_rejects_multicast_and_config_from_env():
    with pytest.raises(MessageError, match="^registration_ids:"):
        LegacyClient(LegacyConfig(server_key="k")).send(LegacyMessage(registration_ids=["a", "b"]))
    cfg = LegacyConfig.from_env({"CCS_SERVER_KEY": "fallback-secret", "CCS_CA_FILE": "/ca.pem"})
    assert (cfg.url, cfg.server_key, cfg.ca_file) == (
        "https://fcm.googleapis.com/fcm/send", "fallback-secret", "/ca.pem")
    assert "fallback-secret" not in repr(cfg)
    own = LegacyConfig.from_env({"CCS_LEGACY_KEY": "k2", "CCS_SERVER_KEY": "k1",
                                 "CCS_LEGACY_URL": "https://example.test/gcm/send"})
    assert (own.server_key, own.url) == ("k2", "https://example.test/gcm/send")
    with pytest.raises(ValueError, match="CCS_LEGACY_KEY"):
        LegacyConfig.from_env({})


# --- the emulator's own validation, through a plain HTTP client ----------------------------

@pytest.mark.parametrize("body, needle", [
    (b"{not json", b"JSON_PARSING_ERROR"),
    (b'{"to": 5}', b'"to"'),
    (b'{"to": "a", "colapse_key": "x"}', b"colapse_key"),
    (b'{"registration_ids": []}', b"registration_ids"),
    (json.dumps({"registration_ids": ["a"] * 1001}).encode(), b"1001"),
    (b'{"data": {"a": "b"}}', b"registration_ids"),
    (b'{"to": "a", "time_to_live": "60"}', b"time_to_live"),
])
def test_emulator_answers_400_to_bad_json(emu, pki, body, needle):
    http = HttpClient(ca_file=pki.ca_file)
    response = http.request("POST", emu.url, {"Authorization": f"key={KEY}",
                                              "Content-Type": "application/json"}, body)
    http.close()
    assert response.status == 400 and needle in response.body


def test_emulator_checks_key_method_and_path(emu, pki):
    heard = []
    emu.seen.add(lambda seen: heard.append((seen.method, seen.path)))
    http = HttpClient(ca_file=pki.ca_file)
    headers = {"Content-Type": "application/json"}
    assert http.request("POST", emu.url, headers, b'{"to": "a"}').status == 401
    auth = {**headers, "Authorization": f"key={KEY}"}
    assert http.request("GET", emu.url, auth).status == 405
    assert http.request("POST", emu.origin + "/other", auth, b"{}").status == 404
    assert http.request("POST", emu.origin + "/gcm/send", auth, b'{"to": "a"}').status == 200
    http.close()
    assert heard == [("POST", "/fcm/send"), ("GET", "/fcm/send"), ("POST", "/other"),
                     ("POST", "/gcm/send")]
