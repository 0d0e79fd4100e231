"""The sans-I/O XMPP stream and the CCS envelope classifier, fed bytes and dicts only."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccs.xmpp import protocol
from ccs.xmpp.stream import (
    AuthFailed,
    GcmReceived,
    Pong,
    ProtocolViolation,
    Ready,
    StanzaError,
    State,
    StreamClosed,
    XmppStream,
    encode_gcm,
)

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='gcm.googleapis.com' "
          b"version='1.0'>")
MECHS = (b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
         b"<mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism>"
         b"<mechanism>PLAIN</mechanism></mechanisms></stream:features>")
SUCCESS = b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
BIND_FEATURES = (b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                 b"<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></stream:features>")
BIND_RESULT = (b"<iq type='result' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
               b"<jid>42@gcm.googleapis.com/r1</jid></bind></iq>")
SESSION_RESULT = b"<iq type='result' id='sess1'/>"


def logged_in() -> XmppStream:
    s = XmppStream("gcm.googleapis.com", "42@gcm.googleapis.com", "sekret", "r1")
    s.data_to_send()
    s.receive(HEADER + MECHS)
    s.data_to_send()
    s.receive(SUCCESS)
    s.receive(HEADER + BIND_FEATURES)
    s.data_to_send()
    events = s.receive(BIND_RESULT + SESSION_RESULT)
    assert events == [Ready("42@gcm.googleapis.com/r1")]
    s.data_to_send()
    return s


def test_handshake_sends_plain_with_the_full_authcid_then_binds_and_opens_a_session():
    s = XmppStream("gcm.googleapis.com", "42@gcm.googleapis.com", "sekret", "r1")
    opening = s.data_to_send()
    assert b"to='gcm.googleapis.com'" in opening and b"<stream:stream" in opening
    assert s.receive(HEADER + MECHS) == []
    auth = ET.fromstring(s.data_to_send())
    assert auth.get("mechanism") == "PLAIN"
    assert base64.b64decode(auth.text) == b"\x0042@gcm.googleapis.com\x00sekret"
    assert s.receive(SUCCESS) == []
    assert b"<stream:stream" in s.data_to_send()  # stream restart after SASL
    s.receive(HEADER + BIND_FEATURES)
    bind = ET.fromstring(s.data_to_send())
    assert bind.find("{urn:ietf:params:xml:ns:xmpp-bind}bind/"
                     "{urn:ietf:params:xml:ns:xmpp-bind}resource").text == "r1"
    s.receive(BIND_RESULT)
    assert b"xmpp-session" in s.data_to_send()
    assert s.receive(SESSION_RESULT) == [Ready("42@gcm.googleapis.com/r1")]
    assert s.state is State.READY
    assert "sekret" not in repr(s)


def test_auth_failure_is_an_event():
    s = XmppStream("gcm.googleapis.com", "42@gcm.googleapis.com", "bad", "r1")
    s.receive(HEADER + MECHS)
    events = s.receive(b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>"
                       b"</failure>")
    assert events == [AuthFailed("not-authorized")]
    assert s.state is State.CLOSED


def test_no_plain_mechanism_is_a_violation():
    s = XmppStream("gcm.googleapis.com", "42@gcm.googleapis.com", "k", "r1")
    with pytest.raises(ProtocolViolation):
        s.receive(HEADER + b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:"
                           b"xmpp-sasl'><mechanism>X-OAUTH2</mechanism></mechanisms>"
                           b"</stream:features>")


@pytest.mark.parametrize("element", [
    b"<message><gcm xmlns='google:mobile:data'>{&quot;a&quot;:1}</gcm></message>",
    b"<message><data:gcm xmlns:data='google:mobile:data'>{&quot;a&quot;:1}</data:gcm></message>",
])
def test_plain_and_prefixed_gcm_elements_both_arrive(element):
    s = logged_in()
    assert s.receive(element) == [GcmReceived('{"a":1}', None)]


def test_stanzas_split_across_reads_are_reassembled():
    s = logged_in()
    data = b"".join(encode_gcm(json.dumps({"n": i})) for i in range(5))
    events = []
    for i in range(0, len(data), 7):
        events += s.receive(data[i:i + 7])
    assert [json.loads(e.json)["n"] for e in events] == [0, 1, 2, 3, 4]


def test_stanza_error_carries_code_condition_text_and_echoed_json():
    s = logged_in()
    events = s.receive(
        b"<message type='error' id='x'><gcm xmlns='google:mobile:data'>{&quot;to&quot;:"
        b"&quot;t&quot;}</gcm><error code='400' type='modify'><bad-request xmlns='urn:ietf:"
        b"params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>"
        b"InvalidJson: JSON_PARSING_ERROR : Missing Required Field: message_id</text></error>"
        b"</message>")
    assert events == [StanzaError("400", "bad-request", "InvalidJson: JSON_PARSING_ERROR : "
                                  "Missing Required Field: message_id", '{"to":"t"}', "x")]


def test_server_ping_is_answered_and_our_ping_gets_a_pong():
    s = logged_in()
    s.receive(b"<iq type='get' id='p9' from='gcm.googleapis.com'><ping xmlns='urn:xmpp:ping'/>"
              b"</iq>")
    reply = ET.fromstring(s.data_to_send())
    assert (reply.get("type"), reply.get("id")) == ("result", "p9")
    ping_id = s.send_ping()
    assert b"urn:xmpp:ping" in s.data_to_send()
    assert s.receive(f"<iq type='result' id='{ping_id}'/>".encode()) == [Pong(ping_id)]


def test_whitespace_keepalives_are_ignored():
    s = logged_in()
    assert s.receive(b" ") == []
    assert s.receive(b" \n ") == []


def test_stream_error_and_end_of_stream_close():
    s = logged_in()
    events = s.receive(b"<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:"
                       b"xmpp-streams'/></stream:error>")
    assert events == [StreamClosed("system-shutdown", None)]
    s2 = logged_in()
    assert s2.receive(b"</stream:stream>") == [StreamClosed(None, "end of stream")]


@pytest.mark.parametrize("hostile", [
    b"<!DOCTYPE x [<!ENTITY a 'aaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>",
    b"<message><!-- comment --></message>",
    b"<message><gcm xmlns='google:mobile:data'><![CDATA[{}]]></gcm></message>",
])
def test_dtds_entities_comments_and_cdata_are_refused(hostile):
    s = logged_in()
    with pytest.raises(ProtocolViolation):
        s.receive(hostile)


def test_refusal_also_works_when_the_marker_is_split_across_reads():
    s = logged_in()
    s.receive(b"<message><")
    with pytest.raises(ProtocolViolation):
        s.receive(b"!-- x --></message>")


def test_malformed_xml_is_a_violation():
    s = logged_in()
    with pytest.raises(ProtocolViolation):
        s.receive(b"<message></iq>")


def test_oversized_stanza_is_refused():
    s = logged_in()
    s.receive(b"<message><gcm xmlns='google:mobile:data'>")
    with pytest.raises(ProtocolViolation):
        for _ in range(20):
            s.receive(b"x" * 65536)


def test_outbound_json_is_escaped_by_the_serialiser():
    text = json.dumps({"data": {"q": "</gcm><evil/>&amp;"}})
    out = encode_gcm(text)
    el = ET.fromstring(out)
    assert el.find("{google:mobile:data}gcm").text == text


def test_gcm_stanza_has_no_address_unless_one_is_given():
    assert ET.fromstring(encode_gcm("{}")).get("to") is None  # CCS routes by the JSON's to
    el = ET.fromstring(encode_gcm("{}", to="peer@localhost"))
    assert el.get("to") == "peer@localhost" and el.find("{google:mobile:data}gcm").text == "{}"


@given(st.dictionaries(st.text(), st.text(), max_size=5))
def test_any_text_round_trips_through_a_stanza(data):
    text = json.dumps({"data": data})
    s = logged_in()
    (ev,) = s.receive(encode_gcm(text))
    assert json.loads(ev.json) == {"data": data}


# The CCS envelope classifier ---------------------------------------------------------------

def test_classify_every_kind():
    ack = protocol.classify('{"from":"t","message_id":"m","message_type":"ack",'
                            '"registration_id":"t2"}')
    assert ack == protocol.Ack("m", "t", "t2")
    nack = protocol.classify('{"from":"t","message_id":"m","message_type":"nack",'
                             '"error":"BAD_REGISTRATION","error_description":"x"}')
    assert nack == protocol.Nack("m", "t", "BAD_REGISTRATION", "x")
    control = protocol.classify('{"message_type":"control","control_type":"CONNECTION_DRAINING"}')
    assert isinstance(control, protocol.Control) and control.draining
    receipt = protocol.classify(json.dumps({
        "message_type": "receipt", "from": "gcm.googleapis.com", "category": "com.x",
        "message_id": "dr2:m1", "time_to_live": 0,
        "data": {"message_status": "MESSAGE_SENT_TO_DEVICE", "original_message_id": "m1",
                 "device_registration_id": "tok", "message_sent_timestamp": "1"}}))
    assert isinstance(receipt, protocol.Receipt)
    assert (receipt.original_message_id, receipt.device_token) == ("m1", "tok")
    assert json.loads(protocol.ack_json(receipt)) == {
        "to": "gcm.googleapis.com", "message_id": "dr2:m1", "message_type": "ack"}
    up = protocol.classify('{"from":"dev","category":"c","message_id":"u1","data":{"a":"b"},'
                           '"time_to_live":86400}')
    assert isinstance(up, protocol.Upstream) and up.data == {"a": "b"}
    assert up.time_to_live == 86400
    assert json.loads(protocol.ack_json(up)) == {"to": "dev", "message_id": "u1",
                                                 "message_type": "ack"}


@pytest.mark.parametrize("text", [
    "not json", "[1,2]", '{"message_type":"ack"}', '{"message_type":"nack"}',
    '{"message_type":"weird","message_id":"m","from":"f"}', '{"data":{}}',
])
def test_classify_malformed(text):
    assert isinstance(protocol.classify(text), protocol.Malformed)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c, max_size=3),
                    max_leaves=10))
def test_classify_never_raises(value):
    protocol.classify(json.dumps(value))
