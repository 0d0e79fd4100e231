"""The emulator's pure parts without sockets: the stream parser, field rules, the script."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccs.xmpp.emulator.record import Record
from ccs.xmpp.emulator.rules import Rejection, Script, check_downstream
from ccs.xmpp.emulator.stanzas import gcm_text
from ccs.xmpp.emulator.xmlstream import (
    StanzaReceived,
    StreamClosed,
    StreamOpened,
    StreamParser,
    XmlStreamError,
)

HEADER = (b"<?xml version='1.0'?><stream:stream to='gcm.googleapis.com' version='1.0' "
          b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
PLAIN = b"<message id='1'><gcm xmlns='google:mobile:data'>{&quot;a&quot;:&quot;&lt;&amp;&gt;&quot;}</gcm></message>"  # noqa: E501
PREFIXED = b"<message><data:gcm xmlns:data='google:mobile:data'>{}</data:gcm></message>"


def test_byte_by_byte_feeding_gives_the_same_events():
    data = HEADER + PLAIN + b"  " + PREFIXED + b"</stream:stream>"
    parser = StreamParser()
    events = []
    for i in range(len(data)):
        events += parser.feed(data[i:i + 1])
    assert [type(e) for e in events] == [StreamOpened, StanzaReceived, StanzaReceived,
                                         StreamClosed]
    assert events[0].attrs["to"] == "gcm.googleapis.com"
    assert gcm_text(events[1].element) == '{"a":"<&>"}'
    assert gcm_text(events[2].element) == "{}"  # found by namespace, prefix ignored


@pytest.mark.parametrize(("data", "condition"), [
    (b"<!DOCTYPE x [<!ENTITY a 'b'>]>", "restricted-xml"),
    (HEADER + b"<message>&lol;</message>", "invalid-xml"),  # undefined: never expanded
    (HEADER + b"<?php evil?>", "restricted-xml"),
    (HEADER + b"<message></iq>", "invalid-xml"),
    (b"<html>", "invalid-namespace"),
])
def test_refused_xml(data, condition):
    with pytest.raises(XmlStreamError) as err:
        StreamParser().feed(data)
    assert err.value.condition == condition


def test_stanza_size_cap_across_feeds():
    parser = StreamParser(max_stanza=1000)
    parser.feed(HEADER + b"<message><body>")
    with pytest.raises(XmlStreamError, match="larger than 1000"):
        for _ in range(20):
            parser.feed(b"x" * 100)


def test_rules_accept_a_full_message():
    check_downstream({"to": "t", "message_id": "m", "priority": "high", "time_to_live": 0,
                      "collapse_key": "c", "content_available": True, "dry_run": False,
                      "notification": {"title": "t", "body_loc_args": ["a"]},
                      "data": {"k": "v" * 4000}})


def test_rules_topic_data_limit_is_2048():
    check_downstream({"to": "/topics/a", "message_id": "m", "data": {"k": "v" * 2000}})
    with pytest.raises(Rejection, match="MESSAGE_TOO_BIG"):
        check_downstream({"to": "/topics/a", "message_id": "m", "data": {"k": "v" * 2100}})


def test_rules_bad_notification_field():
    with pytest.raises(Rejection, match="notification.title"):
        check_downstream({"to": "t", "message_id": "m", "notification": {"title": 5}})


def test_script_times_and_clear():
    s = Script()
    s.set_token_error("t", "DEVICE_UNREGISTERED", times=1)
    assert [s.error_for("t"), s.error_for("t")] == ["DEVICE_UNREGISTERED", None]
    s.set_token_error("u", "BAD_REGISTRATION")
    assert [s.error_for("u"), s.error_for("u")] == ["BAD_REGISTRATION"] * 2
    s.set_token_error("u", None)
    assert s.error_for("u") is None
    with pytest.raises(ValueError):
        s.set_token_error("u", "X", times=0)


def test_bounded_record_keeps_newest_and_totals():
    r = Record(limit=3)
    for i in range(5):
        r.add_downstream(1, {"message_id": str(i)})
    r.add_downstream(1, {"message_id": "4"})
    assert r.downstream_ids() == ["3", "4", "4"]
    assert r.totals["downstream"] == 6
    assert r.duplicates == 1


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_any_chunking_gives_the_same_stanzas(cuts):
    data = HEADER + PLAIN + PREFIXED + PLAIN + b"</stream:stream>"
    parser = StreamParser()
    events, pos = [], 0
    for cut in cuts:
        events += parser.feed(data[pos:pos + cut])
        pos += cut
    events += parser.feed(data[pos:])
    texts = [gcm_text(e.element) for e in events if isinstance(e, StanzaReceived)]
    assert texts == ['{"a":"<&>"}', "{}", '{"a":"<&>"}']
    assert isinstance(events[-1], StreamClosed)
