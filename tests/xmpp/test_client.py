"""CcsClient against the CCS emulator over real TLS sockets on loopback."""

from __future__ import annotations

import contextlib

import pytest

from ccs.outcome import Status, TokenEventKind
from ccs.xmpp.client import CcsClient, CcsConfig
from ccs.xmpp.emulator import CcsEmulator
from ccs.xmpp.message import InvalidMessage, build_message
from tests.helpers import wait_until

SENDER, KEY = "4815162342", "test-server-key"


@contextlib.contextmanager
def client_for(emu: CcsEmulator, **overrides):
    options = dict(sender_id=SENDER, server_key=KEY, host=emu.host, port=emu.port,
                   ca_file=emu.ca_file, connections=1, retry_initial=0.02,
                   reconnect_initial=0.02, reconnect_max=0.2, connect_timeout=5)
    options.update(overrides)
    client = CcsClient(CcsConfig(**options))
    events = []
    client.token_events.add(events.append)
    client.events = events
    client.start()
    try:
        yield client
    finally:
        client.stop(timeout=2)


@pytest.fixture
def emu(pki):
    with CcsEmulator(sender_id=SENDER, server_key=KEY, pki=pki, prefixed_fraction=0.5,
                     upstream_redeliver=0.1, receipt_redeliver=0.1, drain_grace=0.05) as e:
        yield e


def send_all(client, messages, timeout=20):
    results = [client.send(m) for m in messages]
    return [r.get(timeout=timeout) for r in results]


def test_wrong_server_key_is_refused_and_reported(emu):
    with client_for(emu, server_key="wrong") as client:
        assert not client.wait_ready(1.0)
        wait_until(lambda: client.stats()["auth_failures"] >= 1, what="an auth failure")
        assert not client.healthy()
    assert emu.record.auth_failures


def test_login_as_fcm_domain_works(emu):
    with client_for(emu, domain="fcm.googleapis.com") as client:
        assert client.wait_ready(5)
        assert client.stats()["sessions"][0]["jid"].startswith(SENDER + "@")


def test_acks_resolve_every_message_ok(emu):
    with client_for(emu, connections=2) as client:
        assert client.wait_ready(5)
        msgs = [build_message(f"tok-{i}", data={"n": str(i), "q": "<&'\">"}) for i in range(300)]
        outcomes = send_all(client, msgs)
    assert [o.status for o in outcomes] == [Status.OK] * 300
    assert all(o.via == "ccs" and o.attempts == 1 for o in outcomes)
    got = {d.message_id: d.payload for d in emu.record.downstream}
    assert set(got) == {m["message_id"] for m in msgs}
    # The XML-escaped JSON arrived intact.
    assert got[msgs[7]["message_id"]]["data"] == {"n": "7", "q": "<&'\">"}


@pytest.mark.parametrize("code, kind", [
    ("DEVICE_UNREGISTERED", TokenEventKind.UNREGISTERED),
    ("BAD_REGISTRATION", TokenEventKind.INVALID),
    ("INVALID_JSON", None),
    ("BAD_ACK", None),
])
def test_final_nacks_fail_at_once(emu, code, kind):
    emu.set_token_error("doomed", code)
    with client_for(emu) as client:
        out = client.send(build_message("doomed")).get(timeout=5)
        assert out.status is Status.FAILED and out.error == code
        assert out.attempts == 1 and not out.retryable
        assert [e.kind for e in client.events] == ([kind] if kind else [])
    assert len(emu.record.downstream) == 1


@pytest.mark.parametrize("code", ["SERVICE_UNAVAILABLE", "INTERNAL_SERVER_ERROR", "WHO_KNOWS"])
def test_retryable_nacks_are_retried_with_backoff(emu, code):
    emu.set_token_error("flaky", code, times=2)
    with client_for(emu) as client:
        out = client.send(build_message("flaky")).get(timeout=10)
    assert out.status is Status.OK and out.attempts == 3
    times = [d.time for d in emu.record.downstream]
    assert len(times) == 3
    # Exponential: the second pause is longer than the first.
    assert times[2] - times[1] > times[1] - times[0] > 0.01


def test_retryable_nack_past_the_ttl_expires(emu):
    emu.set_token_error("flaky", "SERVICE_UNAVAILABLE")
    # The grace starts at send: wait for the session first, so it is the nacks that use it up
    # (a slow login under load once expired the message before any nack came).
    with client_for(emu, retry_initial=0.5, zero_ttl_grace=0.3) as client:
        assert client.wait_ready(timeout=5)
        out = client.send(build_message("flaky", time_to_live=0)).get(timeout=5)
    assert out.status is Status.EXPIRED and out.error == "SERVICE_UNAVAILABLE"


def test_device_rate_exceeded_backs_off_that_token_only(emu):
    emu.set_token_error("hot", "DEVICE_MESSAGE_RATE_EXCEEDED", times=1)
    with client_for(emu, retry_initial=0.3) as client:
        hot = client.send(build_message("hot"))
        wait_until(lambda: any(e.kind is TokenEventKind.RATE_LIMITED for e in client.events))
        # While "hot" waits out its pause, other tokens go straight through.
        cold = send_all(client, [build_message(f"cold-{i}") for i in range(20)])
        assert not hot.ready()
        assert all(o.ok for o in cold)
        out = hot.get(timeout=5)
    assert out.ok and out.attempts == 2


def test_canonical_ids_reach_outcome_and_token_events(emu):
    emu.set_canonical("old-token", "new-token")
    with client_for(emu) as client:
        out = client.send(build_message("old-token")).get(timeout=5)
        assert out.ok and out.canonical_id == "new-token"
        assert [(e.kind, e.token, e.new_token) for e in client.events] == [
            (TokenEventKind.CANONICAL, "old-token", "new-token")]


def test_receipts_are_handled_then_acked_with_the_dr2_id(emu):
    receipts = []
    with client_for(emu) as client:
        client.on_receipt(receipts.append)
        msg = build_message("tok-r", delivery_receipt_requested=True)
        assert client.send(msg).get(timeout=5).ok
        wait_until(lambda: emu.record.acks_received, what="the receipt ack")
    assert receipts[0].original_message_id == msg["message_id"]
    assert receipts[0].status == "MESSAGE_SENT_TO_DEVICE"
    acks = emu.record.acks_received
    assert [(a.kind, a.message_id) for a in acks] == [("receipt", "dr2:" + msg["message_id"])]


def test_upstream_acked_after_handler_and_redelivered_when_handler_fails(emu):
    seen = []

    def handler(up):
        seen.append(up)
        if len(seen) == 1:
            raise RuntimeError("storage down")

    with client_for(emu) as client:
        client.on_upstream(handler)
        assert client.wait_ready(5)
        mid = emu.send_upstream("device-1", {"hello": "world"})
        wait_until(lambda: emu.record.acks_received, what="the upstream ack")
    assert [u.message_id for u in seen] == [mid, mid]
    assert seen[1].data == {"hello": "world"} and seen[1].sender == "device-1"
    assert [(a.kind, a.message_id) for a in emu.record.acks_received] == [("upstream", mid)]
    assert sum(s.kind == "upstream" for s in emu.record.sent) == 2


def test_upstream_without_a_handler_is_never_acked(emu):
    with client_for(emu) as client:
        assert client.wait_ready(5)
        emu.send_upstream("device-2", {"x": "1"})
        wait_until(lambda: sum(s.kind == "upstream" for s in emu.record.sent) >= 3,
                   what="re-deliveries")
    assert emu.record.acks_received == []


def test_draining_fails_over_without_loss(emu):
    emu.set_faults(drain_after=40, ack_delay=0.005)
    with client_for(emu, connections=2) as client:
        assert client.wait_ready(5)
        msgs = [build_message(f"tok-{i}") for i in range(400)]
        outcomes = send_all(client, msgs, timeout=30)
        stats = client.stats()
    assert all(o.ok for o in outcomes)
    assert {o.message_id for o in outcomes} == {m["message_id"] for m in msgs}
    assert stats["drains"] >= 2
    assert stats["sent_on_unusable"] == 0  # nothing went out on a draining session
    # No message was ever accepted twice, and every draining nack was re-sent elsewhere.
    acked = [s.payload["message_id"] for s in emu.record.acks]
    assert sorted(acked) == sorted(m["message_id"] for m in msgs)


def test_dropped_connection_resends_in_flight_messages(emu):
    emu.set_faults(drop_after=25)
    with client_for(emu, connections=2) as client:
        assert client.wait_ready(5)
        msgs = [build_message(f"tok-{i}") for i in range(200)]
        results = [client.send(m) for m in msgs]
        wait_until(lambda: emu.record.closed, what="the dropped connection")
        emu.set_faults(drop_after=None)
        outcomes = [r.get(timeout=20) for r in results]
        stats = client.stats()
    assert all(o.ok for o in outcomes)
    assert stats["resent_after_loss"] > 0 and stats["reconnects"] > 0
    assert len(emu.record.closed) >= 1
    acked = {s.payload["message_id"] for s in emu.record.acks}
    assert acked == {m["message_id"] for m in msgs}


def test_never_more_than_100_pending(emu):
    emu.set_faults(ack_delay=0.05)
    with client_for(emu, connections=1) as client:
        assert client.wait_ready(5)
        outcomes = send_all(client, [build_message(f"t{i}") for i in range(1000)], timeout=30)
    assert all(o.ok for o in outcomes)
    assert emu.record.flow_violations == []


def test_smaller_window_is_respected(emu):
    emu.set_faults(ack_delay=0.02)
    with client_for(emu, window=10) as client:
        assert client.wait_ready(5)
        results = [client.send(build_message(f"t{i}")) for i in range(50)]
        wait_until(lambda: emu.record.downstream, what="first message")
        assert client.stats()["in_flight"] <= 10
        assert all(r.get(timeout=10).ok for r in results)


def test_idle_dead_server_is_noticed_and_replaced(emu):
    with client_for(emu, ping_interval=0.1, ping_timeout=0.2) as client:
        assert client.wait_ready(5)
        first = client.stats()["sessions"][0]["id"]
        emu.set_faults(stall=True)
        wait_until(lambda: client.stats()["reconnects"] >= 1, timeout=5, what="ping timeout")
        emu.set_faults(stall=False)
        wait_until(lambda: client.healthy() and client.stats()["sessions"][0]["id"] != first,
                   timeout=5, what="a new session")
        assert client.send(build_message("after")).get(timeout=5).ok


@pytest.mark.parametrize("bad, field", [
    ({"message_id": "x"}, "to"),
    ({"to": "t", "message_id": "x", "data": {"from": "me"}}, "data.from"),
    ({"to": "t", "message_id": "x", "time_to_live": 2419201}, "time_to_live"),
    ({"to": "t", "message_id": "x", "priority": "urgent"}, "priority"),
])
def test_invalid_messages_are_refused_naming_the_field(emu, bad, field):
    with client_for(emu) as client:
        with pytest.raises(InvalidMessage) as exc:
            client.send(bad)
    assert exc.value.field == field
    assert emu.record.downstream == []


def test_stop_resolves_everything(emu):
    emu.set_faults(stall=True)
    with client_for(emu) as client:
        wait_until(lambda: client.healthy() or emu.record.opened, what="a connection")
        result = client.send(build_message("never"))
    out = result.get(timeout=1)
    assert out.status in (Status.FAILED, Status.UNKNOWN)


MONKEY_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import sys, threading
from ccs.xmpp.client import CcsClient, CcsConfig
from ccs.xmpp.emulator import CcsEmulator
from ccs.xmpp.message import build_message
with CcsEmulator(sender_id="1", server_key="k") as emu:
    c = CcsClient(CcsConfig(sender_id="1", server_key="k", host="localhost", port=emu.port,
                            ca_file=emu.ca_file, connections=2))
    c.start()
    assert c.wait_ready(10)
    # A plain thread (a greenlet, once patched) sending, as a patched app would.
    out = []
    t = threading.Thread(target=lambda: out.extend(
        c.send(build_message(f"t{i}")).get(10).status for i in range(20)))
    t.start(); t.join()
    c.stop(2)
print(",".join(sorted(set(out))), len(out))
"""


def test_works_under_monkey_patching():
    import subprocess
    import sys

    from tests.helpers import ccs_env

    res = subprocess.run([sys.executable, "-c", MONKEY_SCRIPT], env=ccs_env(),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ok", "20"]


def test_stop_reports_unanswered_messages_as_unknown(emu):
    with client_for(emu) as client:
        assert client.wait_ready(5)
        emu.set_faults(stall=True)
        result = client.send(build_message("in-flight"))
        wait_until(lambda: client.stats()["in_flight"] == 1, what="the message in flight")
        client.stop(timeout=0.2)
    out = result.get(timeout=1)
    assert out.status is Status.UNKNOWN and out.attempts == 1


def test_a_message_id_already_pending_is_refused(emu):
    emu.set_faults(ack_delay=0.2)
    with client_for(emu) as client:
        assert client.wait_ready(5)
        first = client.send(build_message("a", message_id="same-id"))
        with pytest.raises(InvalidMessage) as exc:
            client.send(build_message("b", message_id="same-id"))
        assert exc.value.field == "message_id"
        assert first.get(timeout=5).ok
        # Once answered, the id may be used again (CCS asks for unique ids; we only refuse
        # what would confuse the pending window).
        assert client.send(build_message("c", message_id="same-id")).get(timeout=5).ok


def test_queued_messages_are_handed_back_when_no_session_comes(emu):
    with client_for(emu, no_session_timeout=0.3) as client:
        assert client.wait_ready(5)
        emu.set_faults(refuse_auth=True)
        emu.drop()
        wait_until(lambda: not client.healthy(), what="the session to go")
        out = client.send(build_message("waiting")).get(timeout=5)
    assert (out.status, out.error, out.retryable) == (Status.FAILED, "NO_SESSION", True)
    assert out.attempts == 0


def test_without_a_timeout_queued_messages_wait_for_ccs(emu):
    with client_for(emu) as client:
        assert client.wait_ready(5)
        emu.set_faults(refuse_auth=True)
        emu.drop()
        wait_until(lambda: not client.healthy(), what="the session to go")
        result = client.send(build_message("patient"))
        wait_until(lambda: client.stats()["auth_failures"] >= 2, what="failed logins")
        assert not result.ready()
        emu.set_faults(refuse_auth=False)
        assert result.get(timeout=5).ok


def test_a_message_left_unanswered_closes_its_session_and_goes_out_again(emu):
    emu.set_faults(ack_delay=5.0)  # the server reads, answers pings, but acks far too late
    with client_for(emu, ack_timeout=0.3) as client:
        assert client.wait_ready(5)
        result = client.send(build_message("slow"))
        wait_until(lambda: client.stats()["ack_timeouts"] >= 1, what="the ack timeout")
        emu.set_faults(ack_delay=0.0)
        out = result.get(timeout=10)
        stats = client.stats()
    assert out.ok and out.attempts >= 2
    assert stats["resent_after_loss"] >= 1
    assert len(emu.record.closed) >= 1
