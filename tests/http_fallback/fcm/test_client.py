"""FcmClient against the FCM emulator over real TLS sockets on loopback."""

import logging

import gevent
import pytest

from ccs.outcome import Status, TokenEventKind
from http_fallback.fcm import (
    AndroidConfig,
    AndroidNotification,
    ApnsConfig,
    Message,
    MessageError,
    Notification,
    WebpushConfig,
)
from http_fallback.fcm.emulator import FcmEmulator
from tests.fcm_helpers import client_for, sends
from tests.helpers import wait_until


@pytest.fixture
def emu(pki):
    with FcmEmulator(pki, "proj-1") as emulator:
        yield emulator


@pytest.fixture
def client(emu, pki):
    c = client_for(emu, pki)
    events = []
    c.token_events.add(events.append)
    c.events = events
    yield c
    c.stop(timeout=1)


def test_send_full_message_resolves_ok_with_the_message_name(client, emu):
    message = Message(
        token="tok-1", data={"score": "850"},
        notification=Notification(title="t", body="b", image="https://x/i.png"),
        android=AndroidConfig(ttl=3600, priority="HIGH", collapse_key="c",
                              restricted_package_name="com.example", direct_boot_ok=True,
                              notification=AndroidNotification(
                                  icon="ic", color="#7e55c3", channel_id="ch",
                                  body_loc_key="BODY", body_loc_args=["a", "b"],
                                  click_action="OPEN", image="https://x/i.png")),
        apns=ApnsConfig(headers={"apns-priority": "10"},
                        payload={"aps": {"badge": 1}}, fcm_options={"image": "https://x/i"}),
        webpush=WebpushConfig(headers={"TTL": "60"}, fcm_options={"link": "https://x/"}),
        fcm_options={"analytics_label": "label_1"})
    outcome = client.send(message).get(10)
    assert outcome.status is Status.OK and outcome.via == "http"
    assert outcome.message_id == "projects/proj-1/messages/0:1"
    assert outcome.to == "tok-1" and outcome.attempts == 1
    seen = sends(emu)[0].message
    assert seen["android"]["ttl"] == "3600s"
    assert seen["android"]["notification"]["color"] == "#7e55c3"


def test_topic_and_condition_targets(client):
    assert client.send(Message(topic="news", data={"a": "b"})).get(10).ok
    cond = "'a' in topics && ('b' in topics || 'c' in topics)"
    assert client.send({"condition": cond, "notification": {"title": "x"}}).get(10).ok


def test_validate_only_reaches_the_emulator_but_sends_nothing(emu, pki):
    c = client_for(emu, pki, validate_only=True)
    outcome = c.send(Message(token="tok")).get(10)
    assert outcome.message_id == "projects/proj-1/messages/fake_message_id"
    assert emu.messages_accepted == 0
    c.stop()


@pytest.mark.parametrize("message,field", [
    (Message(token="t", data={"n": 1}), "message.data.n"),
    (Message(token="t", topic="x"), "message"),
    (Message(), "message"),
    (Message(token="t", android=AndroidConfig(ttl="1h")), "message.android.ttl"),
    (Message(token="t", android=AndroidConfig(ttl=3_000_000)), "message.android.ttl"),
    (Message(token="t", android=AndroidConfig(priority="urgent")), "message.android.priority"),
    (Message(token="t", android=AndroidConfig(notification=AndroidNotification(color="red"))),
     "message.android.notification.color"),
    (Message(token="t", android=AndroidConfig(
        notification=AndroidNotification(body_loc_args=["x"]))),
     "message.android.notification.body_loc_key"),
    (Message(token="t", webpush=WebpushConfig(fcm_options={"link": "http://x"})),
     "message.webpush.fcm_options.link"),
    (Message(token="t", apns=ApnsConfig(payload={"aps": "x"})), "message.apns.payload.aps"),
    (Message(token="t", data={"google.x": "1"}), "message.data.google.x"),
    (Message(topic="bad topic!"), "message.topic"),
    (Message(topic="t", data={"k": "v" * 3000}), "message"),
    ({"token": "t", "colour": "x"}, "message.colour"),
    (Message(token="t", fcm_options={"analytics_label": "no spaces"}),
     "message.fcm_options.analytics_label"),
])
def test_validation_names_the_field_and_sends_nothing(client, emu, message, field):
    with pytest.raises(MessageError) as e:
        client.send(message)
    assert e.value.field == field and field in str(e.value)
    assert sends(emu) == []


def test_send_each_names_the_index_of_a_bad_message(client, emu):
    with pytest.raises(MessageError) as e:
        client.send_each([Message(token="a"), Message(token="b", data={"x": 2})])
    assert e.value.field == "messages[1].message.data.x"
    assert sends(emu) == []


def test_send_each_returns_outcomes_in_input_order(client, emu):
    # early messages are slowed by retries, so answers arrive out of order
    tokens = [f"t{i}" for i in range(300)]
    for t in tokens[:20]:
        emu.fail(t, "unavailable", times=2)
    for t in tokens[20:30]:
        emu.fail(t, "unregistered")
    observed = []
    client.outcomes.add(observed.append)
    result = client.send_each([Message(token=t, data={"i": t}) for t in tokens])
    assert sorted(o.to for o in observed) == sorted(tokens)
    assert [o.to for o in result] == tokens
    assert [o.status for o in result[:20]] == [Status.OK] * 20
    assert all(o.attempts == 3 for o in result[:20])
    assert all(o.error == "UNREGISTERED" for o in result[20:30])
    assert result.success_count == 290 and result.failure_count == 10
    # they ran concurrently: the late ones were answered before the early ones finished
    last_ok = max(s.at for s in sends(emu, "t299"))
    assert last_ok < max(s.at for s in sends(emu, "t0"))


def test_send_multicast_in_token_order(client, emu):
    tokens = [f"m{i}" for i in range(500)]
    emu.fail("m7", "invalid")
    result = client.send_multicast(Message(data={"k": "v"}), tokens)
    assert [o.to for o in result] == tokens
    assert result[7].error == "INVALID_ARGUMENT" and result.failure_count == 1
    with pytest.raises(ValueError):
        client.send_multicast(Message(data={"k": "v"}), tokens + ["one too many"])
    with pytest.raises(MessageError):
        client.send_multicast(Message(token="x"), ["a"])


def test_stream_keeps_input_order_and_bounded_memory(client, emu):
    window = 40
    peak = 0

    def messages():
        nonlocal peak
        for i in range(3000):
            peak = max(peak, client.stats()["pending"])
            yield Message(token="bad", data={"x": 1}) if i == 5 else Message(token=f"s{i}")

    outcomes = list(client.stream(messages(), window=window))
    assert len(outcomes) == 3000 and peak <= window
    assert [o.to for i, o in enumerate(outcomes) if i != 5] == \
        [f"s{i}" for i in range(3000) if i != 5]
    assert outcomes[5].status is Status.FAILED and "message.data.x" in outcomes[5].description
    assert emu.messages_accepted == 2999


def test_error_classes_become_typed_outcomes_and_token_events(client, emu):
    emu.fail("gone", "unregistered")
    emu.fail("bad", "invalid")
    emu.fail("pkg", "invalid_package")
    emu.fail("other", "sender_id_mismatch")
    emu.fail("apns", "third_party_auth")
    assert client.send(Message(token="fine")).get(10).ok
    issued = emu.tokens_issued
    results = {t: client.send(Message(token=t)).get(10)
               for t in ("gone", "bad", "pkg", "other", "apns")}
    assert {t: o.error for t, o in results.items()} == {
        "gone": "UNREGISTERED", "bad": "INVALID_ARGUMENT", "pkg": "INVALID_ARGUMENT",
        "other": "SENDER_ID_MISMATCH", "apns": "THIRD_PARTY_AUTH_ERROR"}
    assert all(o.status is Status.FAILED and not o.retryable and o.attempts == 1
               for o in results.values())
    assert "restricted_package_name" in results["pkg"].description
    # only the dead tokens are reported; a payload error is not a dead token
    assert [(e.kind, e.token) for e in client.events] == [
        (TokenEventKind.UNREGISTERED, "gone"), (TokenEventKind.INVALID, "bad")]
    # THIRD_PARTY_AUTH_ERROR is not our credentials: no refresh, no resend
    assert emu.tokens_issued == issued == 1
    assert len(sends(emu, "apns")) == 1


def test_sender_id_mismatch_can_be_configured_as_dead(emu, pki):
    c = client_for(emu, pki, sender_id_mismatch_is_dead=True)
    events = []
    c.token_events.add(events.append)
    emu.fail("other", "sender_id_mismatch")
    assert c.send(Message(token="other")).get(10).error == "SENDER_ID_MISMATCH"
    assert [(e.kind, e.token) for e in events] == [(TokenEventKind.INVALID, "other")]
    c.stop()


def test_retry_honours_retry_after(client, emu):
    emu.fail("busy", "unavailable", times=1, retry_after=1)
    outcome = client.send(Message(token="busy")).get(10)
    assert outcome.ok and outcome.attempts == 2
    first, second = sends(emu, "busy")
    assert first.status == 503 and second.status == 200
    assert second.at - first.at >= 1.0


def test_internal_errors_back_off_exponentially(emu, pki):
    c = client_for(emu, pki, retry_base_delay=0.1)
    emu.fail("flaky", "internal", times=3)
    outcome = c.send(Message(token="flaky")).get(10)
    assert outcome.ok and outcome.attempts == 4
    times = [s.at for s in sends(emu, "flaky")]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4
    c.stop()


def test_quota_exceeded_waits_at_least_the_quota_delay(client, emu):
    events = []
    client.token_events.add(events.append)
    emu.fail("hot", "quota", times=1)
    outcome = client.send(Message(token="hot")).get(10)
    assert outcome.ok and outcome.attempts == 2
    first, second = sends(emu, "hot")
    assert second.at - first.at >= 0.3  # quota_delay, though retry_base_delay is 0.01
    assert [e.kind for e in events] == [TokenEventKind.RATE_LIMITED]


def test_quota_exceeded_follows_a_shorter_retry_after(emu, pki):
    c = client_for(emu, pki, quota_delay=60.0)
    emu.fail("hot", "quota", times=1, retry_after=1)
    outcome = c.send(Message(token="hot")).get(10)
    first, second = sends(emu, "hot")
    assert outcome.ok and 1.0 <= second.at - first.at < 30
    c.stop()


def test_retries_used_up_is_failed_and_retryable(emu, pki):
    c = client_for(emu, pki, max_attempts=3)
    emu.fail("down", "unavailable")
    outcome = c.send(Message(token="down")).get(10)
    assert outcome.status is Status.FAILED and outcome.retryable
    assert outcome.error == "UNAVAILABLE" and outcome.attempts == 3
    assert len(sends(emu, "down")) == 3
    c.stop()


def test_ttl_passing_before_the_next_try_is_expired(client, emu):
    emu.fail("slow", "unavailable", retry_after=5)
    outcome = client.send(Message(token="slow", android=AndroidConfig(ttl=2))).get(10)
    assert outcome.status is Status.EXPIRED and outcome.attempts == 1
    assert outcome.error == "UNAVAILABLE"


def test_ttl_passing_while_queued_is_expired_without_sending(emu, pki):
    # one HTTP/1.1 connection: "late" waits in the queue behind "slow"
    c = client_for(emu, pki, concurrency=1, http2=False)
    emu.delay("slow", 0.5)
    slow = c.send(Message(token="slow"))
    late = c.send(Message(token="late", android=AndroidConfig(ttl=0.2)))
    now_or_never = c.send(Message(token="now", android=AndroidConfig(ttl=0)))
    assert slow.get(10).ok and now_or_never.get(10).ok
    outcome = late.get(10)
    assert outcome.status is Status.EXPIRED and outcome.attempts == 0
    assert sends(emu, "late") == []
    c.stop()


def test_a_slow_answer_times_out_and_is_retried(emu, pki):
    c = client_for(emu, pki, timeout=0.2, max_attempts=2)
    emu.delay("slow", 1.0)
    outcome = c.send(Message(token="slow")).get(10)
    assert outcome.status is Status.FAILED and outcome.error == "NETWORK_ERROR"
    assert outcome.retryable and outcome.attempts == 2
    assert "timeout" in outcome.description.lower()
    c.stop()


def test_retry_deadline_ends_in_failed(emu, pki):
    c = client_for(emu, pki, retry_deadline=0.5, retry_base_delay=0.2)
    assert c.send(Message(token="warm")).get(10).ok  # connected: the deadline is all retries'
    emu.fail("slow", "unavailable")
    outcome = c.send(Message(token="slow")).get(10)
    assert outcome.status is Status.FAILED and outcome.retryable
    assert "deadline" in outcome.description and outcome.attempts == 2
    c.stop()


def test_unreachable_service_is_a_retryable_network_failure(emu, pki):
    from gevent import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"https://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    c = client_for(emu, pki, base_url=dead, max_attempts=2)
    outcome = c.send(Message(token="x")).get(10)
    assert outcome.status is Status.FAILED and outcome.error == "NETWORK_ERROR"
    assert outcome.retryable and outcome.attempts == 2
    c.stop()


def test_stop_resolves_messages_waiting_for_a_retry(emu, pki):
    c = client_for(emu, pki)
    emu.fail("later", "unavailable", retry_after=60)
    result = c.send(Message(token="later"))
    wait_until(lambda: len(sends(emu, "later")) == 1, what="first try")
    c.stop(timeout=0.1)
    outcome = result.get(1)
    assert outcome.status is Status.FAILED and outcome.error == "STOPPED" and outcome.retryable
    with pytest.raises(RuntimeError):
        c.send(Message(token="x"))


def test_secrets_stay_out_of_reprs_and_logs(client, emu, caplog):
    caplog.set_level(logging.DEBUG)
    emu.fail("x", "unauthenticated")
    client.send(Message(token="x")).get(10)
    token = client._tokens._token.value
    key = client.account.private_key
    shown = " ".join([repr(client), repr(client.config), repr(client.account),
                      repr(client._tokens), repr(client._tokens._token), caplog.text])
    assert token not in shown and key not in shown
    assert "BEGIN PRIVATE KEY" not in shown


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "http1.1"])
def test_many_concurrent_sends_share_a_few_connections(emu, pki, http2):
    c = client_for(emu, pki, connections=2, concurrency=8, http2=http2)
    jobs = [gevent.spawn(lambda i=i: c.send(Message(token=f"c{i}")).get(10)) for i in range(200)]
    gevent.joinall(jobs, raise_error=True)
    assert all(j.value.ok for j in jobs)
    if http2:  # the sends shared two connections (the ALPN probe sent nothing)
        assert len({s.connection for s in sends(emu)}) == 2 <= emu.h2_connections <= 3
    else:
        assert c.stats()["connections_opened"] <= 8
    c.stop()


MONKEY_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import threading
from http_fallback.fcm import FcmClient, FcmConfig, Message
from http_fallback.fcm.emulator import FcmEmulator
with FcmEmulator(project_id="patched") as emu:
    emu.fail("t3", "unavailable", times=1)
    c = FcmClient(FcmConfig(emu.credentials_file, base_url=emu.url, ca_file=emu.pki.ca_file,
                            retry_base_delay=0.01))
    out = []
    # a plain thread (a greenlet, once patched) sending, as a patched app would
    t = threading.Thread(target=lambda: out.extend(
        c.send_each([Message(token=f"t{i}") for i in range(20)])))
    t.start(); t.join()
    c.stop(2)
print(",".join(sorted({str(o.status) for o in out})), len(out), out[3].attempts)
"""


def test_works_under_monkey_patching():
    import subprocess
    import sys

    from tests.helpers import ccs_env

    res = subprocess.run([sys.executable, "-c", MONKEY_SCRIPT], env=ccs_env(),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ok", "20", "2"]
