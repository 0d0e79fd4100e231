"""Message validation of every provider, fed values of any type: the provider's documented error
(a ValueError subclass naming the field) or a valid message, never another exception."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ccs.xmpp.message import InvalidMessage, validate_downstream
from ccs.xmpp.protocol import downstream_json
from ccs.xmpp.stream import encode_gcm
from http_fallback.apns.model import Notification, NotificationError
from http_fallback.apns.protocol import prepare
from http_fallback.c2dm.model import C2dmMessage
from http_fallback.c2dm.model import MessageError as C2dmError
from http_fallback.c2dm.protocol import encode_send
from http_fallback.fcm.validate import MessageError as FcmError
from http_fallback.fcm.validate import validate_message
from http_fallback.legacy.model import LegacyMessage
from http_fallback.legacy.model import MessageError as LegacyError
from http_fallback.legacy.protocol import encode_form, encode_json
from http_fallback.mpns.model import MessageError as MpnsError
from http_fallback.mpns.model import MpnsMessage, Raw, Tile, Toast
from http_fallback.mpns.protocol import build_xml, request_headers

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.binary(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8)


def shaped(keys: list[str]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional={k: values for k in keys})


FCM_KEYS = ["token", "topic", "condition", "data", "notification", "android", "apns",
            "webpush", "fcm_options", "name"]


@FAST
@given(values | shaped(FCM_KEYS) | shaped(FCM_KEYS).map(lambda d: {"token": "t", **d})
       | st.fixed_dictionaries({"token": st.just("t"), "android": shaped(
           ["ttl", "priority", "notification", "data", "collapse_key", "direct_boot_ok"])}))
@example({"token": "t", "android": {"ttl": "1e999s"}})
def test_fcm_validation(message):
    try:
        validate_message(message)
    except FcmError as e:
        assert e.args and str(e).startswith("message")


LEGACY_KEYS = ["registration_ids", "to", "notification_key", "condition", "collapse_key",
               "priority", "content_available", "time_to_live", "dry_run", "data",
               "notification", "restricted_package_name"]


@FAST
@given(shaped(LEGACY_KEYS))
def test_legacy_validation_and_encoding(kwargs):
    try:
        msg = LegacyMessage(**kwargs)
    except LegacyError as e:
        assert ":" in str(e)
        return
    assert isinstance(encode_json(msg), bytes)
    try:
        encode_form(msg)
    except LegacyError:
        pass  # the plain-text format cannot carry everything JSON can


@FAST
@given(values, values, values, values)
def test_c2dm_validation_and_encoding(registration_id, collapse_key, data, idle):
    try:
        msg = C2dmMessage(registration_id, collapse_key, data, idle)
    except C2dmError as e:
        assert ":" in str(e)
        return
    assert isinstance(encode_send(msg), bytes)


@FAST
@given(values, st.sampled_from([Toast, Tile, Raw]), values, values, values)
def test_mpns_validation_and_xml(uri, kind, a, delivery, message_id):
    try:
        note = kind(a) if kind is not Tile else Tile(title=a)
        msg = MpnsMessage(uri, note, delivery=delivery, message_id=message_id)
    except MpnsError as e:
        assert ":" in str(e)
        return
    build_xml(msg.notification)
    assert isinstance(request_headers(msg), dict)


APNS_KEYS = ["device", "alert", "badge", "sound", "category", "thread_id", "payload",
             "aps_extra", "expiry", "priority", "collapse_id", "push_type", "topic", "apns_id",
             "content_available", "mutable_content"]


@FAST
@given(shaped(APNS_KEYS).map(lambda d: {"device": "ab" * 32, "topic": "com.x", **d}))
def test_apns_validation(kwargs):
    try:
        prepared = prepare(Notification(**kwargs), None)
    except NotificationError as e:
        assert e.field
        return
    assert len(prepared.body) <= 5120


# -- CCS: whatever validation accepts, the server's XML parser can read ----------------------------

@FAST
@given(st.dictionaries(st.text(min_size=1, max_size=6).filter(
    lambda k: k not in ("from", "gcm") and not k.startswith("google")), st.text(max_size=8),
    max_size=3), st.text(min_size=1, max_size=8), st.text(max_size=8))
@example({"k": "\ud800"}, "m", "t")
@example({"k": "\uffff"}, "m", "t")
@example({"k": "v"}, "m\udfff", "t")
@example({"k": "v"}, "m", "\ufffe")
def test_accepted_ccs_messages_are_well_formed_xml_on_the_wire(data, message_id, title):
    message = {"to": "tok", "message_id": message_id, "data": data,
               "notification": {"title": title, "body_loc_args": [title]}}
    try:
        checked = validate_downstream(message)
    except InvalidMessage as e:
        assert e.field
        return
    stanza = encode_gcm(downstream_json(checked))
    el = ET.fromstring(stanza)  # what the server's parser sees
    assert json.loads(el[0].text)["message_id"] == message_id
