"""CCS emulator flows over real TLS: receipts, upstream, draining, drops, flow control, stall."""

from __future__ import annotations

import json

import pytest

from ccs.xmpp.emulator import CcsEmulator
from tests.ccs_raw import CLOSED, gcm_stanza

STANZA_TEXT = "{urn:ietf:params:xml:ns:xmpp-stanzas}text"


pytest_plugins = ["tests.emulator_fixtures"]  # the make_emu fixture


def down(mid, to="tok-1", **fields):
    return {"to": to, "message_id": mid, "data": {"k": "v"}, **fields}


def let_housekeeping_run(emu, rounds=3):
    start = emu.ticks
    emu.wait_for(lambda: emu.ticks >= start + rounds, what="housekeeping rounds")


# receipts -----------------------------------------------------------------------------------
def test_receipt_after_ack_and_acked_with_dr2_id(make_emu):
    emu = make_emu(receipt_redeliver=0.05)
    c = make_emu.client(emu)
    c.send_gcm(down("m1", delivery_receipt_requested=True, restricted_package_name="com.app"))
    assert c.next_gcm()["message_type"] == "ack"
    receipt = c.next_gcm()
    assert receipt["message_type"] == "receipt"
    assert (receipt["from"], receipt["message_id"], receipt["category"]) == \
        ("gcm.googleapis.com", "dr2:m1", "com.app")
    assert receipt["time_to_live"] == 0
    data = receipt["data"]
    assert (data["message_status"], data["original_message_id"],
            data["device_registration_id"]) == ("MESSAGE_SENT_TO_DEVICE", "m1", "tok-1")
    assert data["message_sent_timestamp"].isdigit()
    c.send_gcm({"to": "gcm.googleapis.com", "message_id": "dr2:m1", "message_type": "ack"})
    emu.wait_for(lambda: emu.record.acks_received)
    assert emu.record.acks_received[0].kind == "receipt"
    assert emu.outstanding == {}
    sent = len(emu.record.of_kind("receipt"))
    let_housekeeping_run(emu)
    assert len(emu.record.of_kind("receipt")) == sent


def test_unacked_receipt_redelivered(make_emu):
    emu = make_emu(receipt_redeliver=0.05)
    c = make_emu.client(emu)
    c.send_gcm(down("m1", delivery_receipt_requested=True))
    c.next_gcm()
    first = c.next_gcm()
    again = c.next_gcm()
    assert again["message_id"] == first["message_id"] == "dr2:m1"
    assert emu.record.of_kind("receipt")[1].redelivery


def test_receipt_acked_without_prefix_gets_406(make_emu):
    emu = make_emu()
    c = make_emu.client(emu)
    c.send_gcm(down("m1", delivery_receipt_requested=True))
    c.next_gcm()
    c.next_gcm()
    c.send_gcm({"to": "gcm.googleapis.com", "message_id": "m1", "message_type": "ack"})
    err = c.next()
    assert err.get("type") == "error"
    assert err.find("{jabber:client}error").get("code") == "406"
    assert "dr2:m1" in emu.outstanding
    assert emu.record.acks_received[0].kind == "unknown"


def test_no_receipt_for_dry_run(make_emu):
    emu = make_emu()
    c = make_emu.client(emu)
    c.send_gcm(down("m1", delivery_receipt_requested=True, dry_run=True))
    c.send_gcm(down("m2"))
    assert [c.next_gcm()["message_id"] for _ in range(2)] == ["m1", "m2"]
    assert emu.record.of_kind("receipt") == []


# upstream -----------------------------------------------------------------------------------
def test_upstream_delivered_and_acked(make_emu):
    emu = make_emu(upstream_redeliver=0.05)
    c = make_emu.client(emu)
    mid = emu.send_upstream("dev-1", {"hello": "world"}, category="com.app", time_to_live=60)
    el = c.next()
    assert (el.get("to"), el.get("from"), el.get("type")) == \
        ("1234@gcm.googleapis.com", "devices@gcm.googleapis.com", "normal")
    payload = json.loads(el.find("{google:mobile:data}gcm").text)
    assert payload == {"from": "dev-1", "category": "com.app", "message_id": mid,
                       "data": {"hello": "world"}, "time_to_live": 60}
    c.ack(payload)
    emu.wait_for(lambda: emu.record.acks_received)
    assert emu.record.acks_received[0].kind == "upstream"
    sent = len(emu.record.of_kind("upstream"))
    let_housekeeping_run(emu)
    assert len(emu.record.of_kind("upstream")) == sent


def test_upstream_waits_for_a_connection(make_emu):
    emu = make_emu()
    mid = emu.send_upstream("dev-1", {"a": "1"})
    c = make_emu.client(emu)
    assert c.next_gcm()["message_id"] == mid


def test_unacked_upstream_redelivered_on_another_connection(make_emu):
    emu = make_emu(upstream_redeliver=30)
    first = make_emu.client(emu, resource="one")
    mid = emu.send_upstream("dev-1", {"a": "1"})
    got = first.next_gcm()
    assert got["message_id"] == mid
    second = make_emu.client(emu, resource="two")
    # An ack on a connection the message was not sent on is refused with a 406.
    second.ack(got)
    err = second.next()
    assert err.find("{jabber:client}error").get("code") == "406"
    assert "not sent over this connection" in err.findtext(".//" + STANZA_TEXT)
    first.close()
    emu.wait_for(lambda: not emu.connections[0].open)
    emu.settings.upstream_redeliver = 0.05
    again = second.next_gcm()
    assert again["message_id"] == mid
    assert emu.record.of_kind("upstream")[-1].redelivery
    second.ack(again)
    emu.wait_for(lambda: not emu.outstanding)


def test_ack_for_unknown_id_gets_406(make_emu):
    c = make_emu.client(make_emu())
    c.send_gcm({"to": "dev-1", "message_id": "never-sent", "message_type": "ack"})
    assert c.next().find("{jabber:client}error").get("code") == "406"


# draining -----------------------------------------------------------------------------------
def test_drain_control_then_closed_after_pending_answered(make_emu):
    emu = make_emu(ack_delay=1.0, drain_grace=0.05)
    c = make_emu.client(emu)
    c.send_gcm(down("m1"))
    emu.wait_for(lambda: emu.connections[0].pending == 1)
    emu.drain()
    control = c.next_gcm()
    assert control == {"message_type": "control", "control_type": "CONNECTION_DRAINING"}
    assert emu.connections[0].draining
    c.send_gcm(down("m2"))
    answers = {m["message_id"]: m for m in (c.next_gcm(), c.next_gcm())}
    assert answers["m1"]["message_type"] == "ack"
    assert answers["m2"]["error"] == "CONNECTION_DRAINING"
    assert c.next() is CLOSED
    assert emu.record.closed[0].detail == "drained"
    assert b"</stream:stream>" in bytes(c.raw)


def test_drain_after(make_emu):
    emu = make_emu(drain_after=2)
    c = make_emu.client(emu)
    c.send_gcm(down("m1"))
    c.send_gcm(down("m2"))
    got = [c.next_gcm() for _ in range(3)]
    assert [g.get("control_type") or g["message_type"] for g in got] == \
        ["ack", "ack", "CONNECTION_DRAINING"]
    assert "message_id" not in got[2]


# drops --------------------------------------------------------------------------------------
def test_drop_after_closes_without_answering(make_emu):
    emu = make_emu(drop_after=3)
    c = make_emu.client(emu)
    for i in range(2):
        c.send_gcm(down(f"m{i}"))
        c.next_gcm()
    c.send_gcm(down("m2"))
    assert c.next() is CLOSED
    assert emu.record.downstream_ids() == ["m0", "m1", "m2"]
    assert emu.record.answered_ids() == {"m0", "m1"}
    assert "drop_after" in emu.record.closed[0].detail


def test_drop_now(make_emu):
    emu = make_emu(ack_delay=5)
    c = make_emu.client(emu)
    c.send_gcm(down("m1"))
    emu.wait_for(lambda: emu.connections[0].pending == 1)
    emu.drop()
    assert c.next() is CLOSED
    assert not emu.connections[0].open
    assert emu.record.acks == []


# flow control -------------------------------------------------------------------------------
def _fill(c, n, prefix="m"):
    c.send(b"".join(_stanza(down(f"{prefix}{i}")) for i in range(n)))


def _stanza(payload):
    return gcm_stanza(payload)


def test_101st_pending_is_a_violation_and_closes(make_emu):
    emu = make_emu(ack_delay=2.0)
    c = make_emu.client(emu)
    _fill(c, 101)
    assert c.closed(timeout=10)
    assert b"policy-violation" in bytes(c.raw)
    assert len(emu.record.flow_violations) == 1
    assert "m100" in emu.record.flow_violations[0].detail


def test_flow_violation_nack_mode(make_emu):
    emu = make_emu(ack_delay=0.3, flow_violation="nack")
    c = make_emu.client(emu)
    _fill(c, 101)
    answers = {m["message_id"]: m for m in (c.next_gcm() for _ in range(101))}
    assert answers["m100"]["error"] == "SERVICE_UNAVAILABLE"
    assert all(answers[f"m{i}"]["message_type"] == "ack" for i in range(100))
    assert len(emu.record.flow_violations) == 1


def test_acks_from_client_do_not_count_as_pending(make_emu):
    emu = make_emu(ack_delay=2.0)
    c = make_emu.client(emu)
    mid = emu.send_upstream("dev-1", {"a": "1"})
    up = c.next_gcm()
    assert up["message_id"] == mid
    _fill(c, 100)
    emu.wait_for(lambda: emu.connections[0].pending == 100)
    c.ack(up)
    emu.wait_for(lambda: emu.record.acks_received)
    assert emu.record.flow_violations == []
    assert emu.connections[0].open


def test_no_strict_flow_records_nothing(make_emu):
    emu = make_emu(ack_delay=0.2, strict_flow=False)
    c = make_emu.client(emu)
    _fill(c, 120)
    ids = {c.next_gcm()["message_id"] for _ in range(120)}
    assert len(ids) == 120 and emu.record.flow_violations == []


# stall --------------------------------------------------------------------------------------
def test_stall_answers_nothing_until_lifted(make_emu):
    emu = make_emu()
    c = make_emu.client(emu)
    emu.set_faults(stall=True)
    c.send_gcm(down("m1"))
    c.send(b"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    emu.wait_for(lambda: len(emu.record.ignored) == 2)
    assert c.idle()
    emu.set_faults(stall=False)
    c.send_gcm(down("m2"))
    got = c.next_gcm()  # neither m1 nor the ping was ever answered
    assert got["message_id"] == "m2"
    assert emu.record.answered_ids() == {"m2"}


def test_unknown_option_is_an_error_naming_it(pki):
    with pytest.raises(TypeError, match="ack_dealy"):
        CcsEmulator(pki=pki, ack_dealy=1)
    with pytest.raises(ValueError, match="drain_after"):
        CcsEmulator(pki=pki, drain_after=0)


def test_receipt_delay_sends_receipt_later_on_same_connection(make_emu):
    emu = make_emu(receipt_delay=0.1)
    first = make_emu.client(emu, resource="one")
    make_emu.client(emu, resource="two")
    first.send_gcm(down("m1", delivery_receipt_requested=True))
    assert first.next_gcm()["message_type"] == "ack"
    assert emu.record.of_kind("receipt") == []
    receipt = first.next_gcm()
    assert receipt["message_id"] == "dr2:m1"
    assert emu.record.of_kind("receipt")[0].conn_id == emu.record.downstream[0].conn_id
