"""The CCS emulator over real TLS sockets, driven by a hand-written client (tests/ccs_raw.py)."""

from __future__ import annotations

import pytest

SASL = "{urn:ietf:params:xml:ns:xmpp-sasl}"


pytest_plugins = ["tests.emulator_fixtures"]  # the make_emu fixture


def down(mid, to="tok-1", **fields):
    return {"to": to, "message_id": mid, "data": {"k": "v"}, **fields}


# handshake ---------------------------------------------------------------------------------
def test_features_offer_google_mechanisms(make_emu):
    c = make_emu.client(make_emu(), login=False)
    features = c.open_stream()
    mechs = [m.text for m in features.iter(SASL + "mechanism")]
    assert mechs == ["X-OAUTH2", "X-GOOGLE-TOKEN", "PLAIN"]


@pytest.mark.parametrize("domain", ["gcm.googleapis.com", "fcm.googleapis.com"])
def test_login_binds_client_resource(make_emu, domain):
    emu = make_emu()
    c = make_emu.client(emu, login=False)
    c.open_stream()
    assert c.auth(authcid=f"1234@{domain}").tag == SASL + "success"
    c._new_parser()
    c.open_stream()
    c.send(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
           b"<resource>mine</resource></bind></iq>")
    assert c.next().findtext(".//{urn:ietf:params:xml:ns:xmpp-bind}jid") == \
        "1234@gcm.googleapis.com/mine"
    emu.wait_for(lambda: emu.connections and emu.connections[0].jid)
    assert emu.connections[0].jid == "1234@gcm.googleapis.com/mine"


@pytest.mark.parametrize(("authcid", "password"), [
    ("1234@gcm.googleapis.com", "wrong"),
    ("9999@gcm.googleapis.com", "secret"),
    ("1234@example.com", "secret"),
])
def test_bad_credentials_not_authorized(make_emu, authcid, password):
    emu = make_emu()
    c = make_emu.client(emu, login=False)
    c.open_stream()
    answer = c.auth(authcid=authcid, password=password)
    assert answer.tag == SASL + "failure"
    assert answer.find(SASL + "not-authorized") is not None
    assert len(emu.record.auth_failures) == 1
    assert not emu.record.auth_ok


def test_refuse_auth_fault_then_lifted(make_emu):
    emu = make_emu(refuse_auth=True)
    c = make_emu.client(emu, login=False)
    c.open_stream()
    assert c.auth().tag == SASL + "failure"
    emu.set_faults(refuse_auth=False)
    assert c.auth().tag == SASL + "success"


def test_ping_answered(make_emu):
    c = make_emu.client(make_emu())
    c.send(b"<iq type='get' id='p1' to='gcm.googleapis.com'><ping xmlns='urn:xmpp:ping'/></iq>")
    pong = c.next()
    assert (pong.get("type"), pong.get("id")) == ("result", "p1")


def test_whitespace_keepalive(make_emu):
    emu = make_emu(keepalive=0.05)
    c = make_emu.client(emu)
    before = bytes(c.raw)
    emu.wait_for(lambda: bytes(c.raw) != before and bytes(c.raw).endswith(b" "), 3)


def test_stanza_before_auth_is_stream_error(make_emu):
    c = make_emu.client(make_emu(), login=False)
    c.open_stream()
    c.send_gcm(down("m1"))
    assert c.closed()
    assert b"not-authorized" in bytes(c.raw)


# XML safety ---------------------------------------------------------------------------------
def test_malformed_xml_invalid_xml_stream_error(make_emu):
    emu = make_emu()
    c = make_emu.client(emu)
    c.send(b"<message><gcm xmlns='google:mobile:data'>{}</oops></message>")
    assert c.closed()
    assert b"<invalid-xml" in bytes(c.raw)
    assert emu.record.closed


def test_entity_expansion_refused(make_emu):
    emu = make_emu()
    c = make_emu.client(emu, login=False)
    c.send(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'>"
           b"<!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>]>")
    assert c.closed()
    assert b"restricted-xml" in bytes(c.raw)
    assert "DTD" in emu.record.stream_errors[0].detail


def test_oversized_stanza_refused(make_emu):
    emu = make_emu(max_stanza=4096)
    c = make_emu.client(emu)
    c.send_gcm(down("big", data={"k": "x" * 10000}))
    assert c.closed()
    assert b"policy-violation" in bytes(c.raw)


# downstream ----------------------------------------------------------------------------------
def test_ack_for_downstream_and_record(make_emu):
    emu = make_emu()
    c = make_emu.client(emu)
    c.send_gcm(down("m1"))
    assert c.next_gcm() == {"from": "tok-1", "message_id": "m1", "message_type": "ack"}
    assert emu.record.downstream_ids() == ["m1"]
    assert emu.record.downstream[0].conn_id == emu.connections[0].id
    assert emu.connections[0].pending == 0


def test_prefixed_client_stanza_and_xml_escaping(make_emu):
    emu = make_emu(prefixed_fraction=1.0)
    c = make_emu.client(emu)
    c.send_gcm(down("m<&>\"1", to="t<&>"), prefixed=True)
    assert c.next_gcm()["message_id"] == "m<&>\"1"
    assert b"<data:gcm xmlns:data=\"google:mobile:data\">" in bytes(c.raw)
    assert b"&lt;&amp;&gt;" in bytes(c.raw)


@pytest.mark.parametrize("code", ["DEVICE_UNREGISTERED", "BAD_REGISTRATION",
                                  "DEVICE_MESSAGE_RATE_EXCEEDED", "SERVICE_UNAVAILABLE",
                                  "INTERNAL_SERVER_ERROR", "TOPICS_MESSAGE_RATE_EXCEEDED"])
def test_scripted_token_error_nack(make_emu, code):
    emu = make_emu()
    emu.set_token_error("tok-bad", code)
    c = make_emu.client(emu)
    c.send_gcm(down("m1", to="tok-bad"))
    nack = c.next_gcm()
    assert nack["message_type"] == "nack"
    assert (nack["message_id"], nack["from"], nack["error"]) == ("m1", "tok-bad", code)
    assert nack["error_description"]
    assert emu.record.nacks[0].payload["error"] == code


def test_token_error_times_then_ack(make_emu):
    emu = make_emu()
    emu.set_token_error("tok-1", "SERVICE_UNAVAILABLE", times=2)
    c = make_emu.client(emu)
    kinds = []
    for i in range(3):
        c.send_gcm(down(f"m{i}"))
        kinds.append(c.next_gcm()["message_type"])
    assert kinds == ["nack", "nack", "ack"]


def test_canonical_registration_id(make_emu):
    emu = make_emu()
    emu.set_canonical("old", "new")
    c = make_emu.client(emu)
    c.send_gcm(down("m1", to="old"))
    assert c.next_gcm()["registration_id"] == "new"


def test_missing_message_id_stanza_error(make_emu):
    emu = make_emu()
    c = make_emu.client(emu)
    c.send_gcm({"to": "tok-1", "data": {}}, id="x7")
    err = c.next()
    assert err.get("type") == "error" and err.get("id") == "x7"
    error = err.find("{jabber:client}error")
    assert (error.get("code"), error.get("type")) == ("400", "modify")
    assert error.find("{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request") is not None
    assert error.findtext("{urn:ietf:params:xml:ns:xmpp-stanzas}text") == \
        "InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id"
    assert err.find("{google:mobile:data}gcm") is not None  # the payload is echoed
    assert emu.record.downstream == []


def test_unparsable_json_stanza_error(make_emu):
    c = make_emu.client(make_emu())
    c.send_gcm("{not json")
    err = c.next()
    assert err.get("type") == "error"
    assert "JSON_PARSING_ERROR" in err.findtext(".//{urn:ietf:params:xml:ns:xmpp-stanzas}text")


@pytest.mark.parametrize(("fields", "kind"), [
    ({"time_to_live": 2419201}, "INVALID_TTL"),
    ({"time_to_live": "60"}, "INVALID_TTL"),
    ({"data": {"from": "x"}}, "INVALID_DATA_KEY"),
    ({"data": {"google.x": "x"}}, "INVALID_DATA_KEY"),
    ({"data": {"k": "x" * 4100}}, "MESSAGE_TOO_BIG"),
    ({"priority": "urgent"}, "INVALID_PRIORITY"),
    ({"delivery_receipt_requested": "yes"}, "JSON_TYPE_ERROR"),
    ({"to": "/topics/bad topic"}, "INVALID_TO"),
    ({"to": None, "condition": "'a' in topics &&"}, "INVALID_CONDITION"),
    ({"to": None, "condition": " || ".join(f"'t{i}' in topics" for i in range(6))},
     "INVALID_CONDITION"),
    ({"to": None}, "MISSING_REGISTRATION"),
])
def test_invalid_fields_nacked_invalid_json(make_emu, fields, kind):
    c = make_emu.client(make_emu())
    msg = down("m1", **fields)
    msg = {k: v for k, v in msg.items() if v is not None}
    c.send_gcm(msg)
    nack = c.next_gcm()
    assert (nack["message_type"], nack["error"]) == ("nack", "INVALID_JSON")
    assert nack["error_description"].startswith(f"InvalidJson : {kind} : ")


def test_valid_condition_and_topic_acked(make_emu):
    c = make_emu.client(make_emu())
    c.send_gcm({"condition": "'a' in topics && ('b' in topics || 'c' in topics)",
                "message_id": "m1", "data": {}})
    c.send_gcm(down("m2", to="/topics/news-1.x"))
    assert [c.next_gcm()["message_type"] for _ in range(2)] == ["ack", "ack"]


def test_unknown_fields_ignored_unless_strict(make_emu):
    c = make_emu.client(make_emu())
    c.send_gcm(down("m1", time_to_leave=5))
    assert c.next_gcm()["message_type"] == "ack"
    strict = make_emu.client(make_emu(strict_fields=True))
    strict.send_gcm(down("m2", time_to_leave=5))
    nack = strict.next_gcm()
    assert nack["error"] == "INVALID_JSON" and "time_to_leave" in nack["error_description"]


def test_duplicate_message_ids_counted(make_emu):
    emu = make_emu()
    c = make_emu.client(emu)
    for mid in ("a", "b", "a", "a"):
        c.send_gcm(down(mid))
        c.next_gcm()
    assert emu.record.duplicates == 2


def test_unavailable_every(make_emu):
    c = make_emu.client(make_emu(unavailable_every=3))
    got = []
    for i in range(6):
        c.send_gcm(down(f"m{i}"))
        got.append(c.next_gcm().get("error"))
    assert got == [None, None, "SERVICE_UNAVAILABLE", None, None, "SERVICE_UNAVAILABLE"]


def test_ack_delay_holds_answers_and_counts_pending(make_emu):
    emu = make_emu(ack_delay=1.0)
    c = make_emu.client(emu)
    for i in range(5):
        c.send_gcm(down(f"m{i}"))
    emu.wait_for(lambda: emu.connections[0].pending == 5)
    assert c.idle()
    ids = [c.next_gcm()["message_id"] for _ in range(5)]
    assert ids == [f"m{i}" for i in range(5)]
    emu.wait_for(lambda: emu.connections[0].pending == 0)


def test_connections_per_sender_capped(make_emu):
    emu = make_emu(max_connections=2)
    make_emu.client(emu, resource="a")
    make_emu.client(emu, resource="b")
    third = make_emu.client(emu, login=False)
    third.open_stream()
    third.auth()
    assert third.closed()
    assert b"policy-violation" in bytes(third.raw)
    assert [c.open for c in emu.connections] == [True, True, False]


def test_bind_without_resource_gets_one_assigned(make_emu):
    emu = make_emu()
    c = make_emu.client(emu, login=False)
    c.open_stream()
    c.auth()
    c._new_parser()
    c.open_stream()
    c.send(b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    jid = c.next().findtext(".//{urn:ietf:params:xml:ns:xmpp-bind}jid")
    bare, _, resource = jid.partition("/")
    assert bare == "1234@gcm.googleapis.com" and resource
