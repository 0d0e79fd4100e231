"""Message validation of every provider, fed values of any type: the provider's documented error
(a ValueError subclass naming the field) or a valid message, never another exception."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

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
