"""Pure APNs rules: notification building, checks, reply parsing, reason classes, config."""

import datetime
import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from http_fallback.apns.config import SANDBOX, ApnsConfig
from http_fallback.apns.model import Alert, Notification, NotificationError, PushType
from http_fallback.apns.protocol import (
    ReasonClass,
    backoff,
    classify,
    parse_reply,
    prepare,
    token_needs_refresh,
)

TOKEN = "a1" * 32


def headers(p):
    return {k.decode(): v.decode() for k, v in p.headers}


def test_alert_payload_and_headers():
    n = Notification(device=TOKEN.upper(), alert=Alert(title="T", subtitle="S", loc_key="K",
                                                       loc_args=["a"], action_loc_key="V",
                                                       launch_image="l.png"),
                     badge=3, sound="ping.aiff", category="c", thread_id="t",
                     mutable_content=True, payload={"from": "Caroline"}, expiry=0,
                     collapse_id="x" * 64)
    p = prepare(n, "com.example.app")
    body = json.loads(p.body)
    assert body == {"from": "Caroline", "aps": {
        "alert": {"title": "T", "subtitle": "S", "loc-key": "K", "loc-args": ["a"],
                  "action-loc-key": "V", "launch-image": "l.png"},
        "badge": 3, "sound": "ping.aiff", "mutable-content": 1, "category": "c",
        "thread-id": "t"}}
    h = headers(p)
    assert p.path == b"/3/device/" + TOKEN.encode()
    assert h["apns-push-type"] == "alert" and h["apns-priority"] == "10"
    assert h["apns-topic"] == "com.example.app" and h["apns-expiration"] == "0"
    assert h["apns-collapse-id"] == "x" * 64 and h["apns-id"] == p.apns_id


def test_node_apn_setters_and_clone():
    n = Notification(device=TOKEN).set_alert_text("hi").set_loc_key("K").set_loc_args(["1"])
    twin = n.clone("b2" * 32)
    twin.alert.body = "changed"
    assert n.alert.body == "hi" and twin.device == "b2" * 32
    assert prepare(n, "t").apns_id != prepare(twin, "t").apns_id


@pytest.mark.parametrize("push_type,topic", [
    ("voip", "com.x.voip"), ("complication", "com.x.complication"),
    ("fileprovider", "com.x.pushkit.fileprovider"), ("location", "com.x.location-query"),
    ("liveactivity", "com.x.push-type.liveactivity"), ("alert", "com.x"), ("mdm", "com.x"),
    ("widgets", "com.x"), ("pushtotalk", "com.x.voip-ptt"),
])
def test_topic_suffix_per_push_type(push_type, topic):
    p = prepare(Notification(device=TOKEN, alert="a", push_type=push_type), "com.x")
    assert headers(p)["apns-topic"] == topic
    again = prepare(Notification(device=TOKEN, alert="a", push_type=push_type, topic=topic), None)
    assert headers(again)["apns-topic"] == topic


def test_background_is_priority_5():
    p = prepare(Notification(device=TOKEN, content_available=True), "t")
    assert headers(p)["apns-push-type"] == "background" and headers(p)["apns-priority"] == "5"
    with pytest.raises(NotificationError) as e:
        prepare(Notification(device=TOKEN, content_available=True, priority=10), "t")
    assert e.value.field == "priority"


@pytest.mark.parametrize("kwargs,field", [
    ({"device": "xyz"}, "device"), ({"device": None}, "device"),
    ({"priority": 7}, "priority"), ({"collapse_id": "é" * 33}, "collapse_id"),
    ({"expiry": -1}, "expiry"), ({"push_type": "fax"}, "push_type"),
    ({"badge": "3"}, "badge"), ({"apns_id": "NOT-A-UUID"}, "apns_id"),
    ({"payload": {"aps": 1}}, "payload"), ({"payload": {"x": object()}}, "payload"),
    ({"collapse_id": "a\nb"}, "collapse_id"), ({"expiry": True}, "expiry"),
    ({"topic": "com.x\r\nevil: 1"}, "topic"), ({"priority": True}, "priority"),
    ({"priority": 10.0}, "priority"), ({"topic": ["com.x"]}, "topic"),
])
def test_bad_input_names_the_field(kwargs, field):
    n = Notification(**{"device": TOKEN, "alert": "a", **kwargs})
    with pytest.raises(NotificationError) as e:
        prepare(n, "t")
    assert e.value.field == field


def test_checks_hold_for_cached_headers_and_ids_are_fresh_v4_uuids():
    ok = [prepare(Notification(device=TOKEN, alert="a"), "com.x") for _ in range(3)]
    ids = {p.apns_id for p in ok}
    assert len(ids) == 3 and all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i
                                 for i in ids)
    assert [h for h in ok[0].headers if h[0] != b"apns-id"] == \
        [h for h in ok[2].headers if h[0] != b"apns-id"]
    for _ in range(2):  # the same (topic, push type, priority) refused again, not cached
        with pytest.raises(NotificationError):
            prepare(Notification(device=TOKEN, content_available=True, priority=10), "com.x")
        with pytest.raises(NotificationError):
            prepare(Notification(device=TOKEN, alert="a", topic="com x"), None)


def test_payload_limits_count_utf8_bytes():
    emoji = "😀" * 1100  # 4400 bytes of UTF-8, 1100 characters
    with pytest.raises(NotificationError, match="4096-byte limit"):
        prepare(Notification(device=TOKEN, alert=emoji), "t")
    p = prepare(Notification(device=TOKEN, alert=emoji, push_type=PushType.VOIP), "t")
    assert "😀".encode() in p.body and len(p.body) > 4096
    with pytest.raises(NotificationError, match="5120-byte limit"):
        prepare(Notification(device=TOKEN, alert="😀" * 1300, push_type="voip"), "t")


def test_missing_topic():
    with pytest.raises(NotificationError) as e:
        prepare(Notification(device=TOKEN, alert="a"), None)
    assert e.value.field == "topic"


@pytest.mark.parametrize("reason,status,cls", [
    ("BadCollapseId", 400, ReasonClass.REQUEST), ("PayloadTooLarge", 413, ReasonClass.REQUEST),
    ("TopicDisallowed", 400, ReasonClass.CONFIGURATION),
    ("InvalidProviderToken", 403, ReasonClass.CONFIGURATION),
    ("Unregistered", 410, ReasonClass.TOKEN_GONE), ("BadDeviceToken", 400, ReasonClass.TOKEN_GONE),
    ("ExpiredProviderToken", 403, ReasonClass.CONNECTION),
    ("TooManyProviderTokenUpdates", 429, ReasonClass.CONNECTION),
    ("TooManyRequests", 429, ReasonClass.BACKOFF),
    ("ServiceUnavailable", 503, ReasonClass.RETRYABLE), ("Shutdown", 503, ReasonClass.RETRYABLE),
    ("SomethingNew", 403, ReasonClass.CONFIGURATION), ("SomethingNew", 502, ReasonClass.RETRYABLE),
])
def test_classify(reason, status, cls):
    assert classify(reason, status) is cls


def test_parse_reply():
    ok = parse_reply(200, {b"apns-id": b"abc"}, b"")
    assert ok.ok and ok.apns_id == "abc"
    gone = parse_reply(410, {}, b'{"reason":"Unregistered","timestamp":1700000000123}')
    assert gone.reason == "Unregistered" and gone.timestamp_ms == 1700000000123
    assert parse_reply(500, {}, b"<html>").reason == "HTTP500"


def test_backoff_and_token_refresh():
    delays = [backoff(n, 0.5, 30) for n in range(1, 10)]
    assert 0.5 <= delays[0] <= 0.625 and 1.0 <= delays[1] <= 1.25
    assert all(d <= 37.5 for d in delays) and delays[-1] >= 30
    assert not token_needs_refresh(0, 49 * 60, 50 * 60)
    assert token_needs_refresh(0, 50 * 60, 50 * 60)
    assert not token_needs_refresh(0, 10 * 60, 5 * 60)  # never sooner than 20 minutes


def test_config_from_env_and_secrets():
    cfg = ApnsConfig.from_env({"CCS_APNS_SANDBOX": "1", "CCS_APNS_KEY_FILE": "/k.p8",
                               "CCS_APNS_KEY_ID": "K", "CCS_APNS_TEAM_ID": "T",
                               "CCS_APNS_CONNECTIONS": "4", "CCS_APNS_TOPIC": "com.x"})
    assert cfg.host == SANDBOX and cfg.port == 443 and cfg.connections == 4
    assert cfg.legacy_host == "gateway.sandbox.push.apple.com" and cfg.feedback_port == 2196
    with pytest.raises(ValueError, match="CCS_APNS_PORT"):
        ApnsConfig.from_env({"CCS_APNS_PORT": "x"})
    with pytest.raises(ValueError, match="key_id"):
        ApnsConfig(key_file="/k.p8")
    with pytest.raises(ValueError, match="token_refresh"):
        ApnsConfig(token_refresh=600)
    shown = repr(ApnsConfig(pfx_data=b"SECRETBYTES", passphrase="hunter2"))
    assert "hunter2" not in shown and "SECRETBYTES" not in shown


def test_timestamp_is_datetime_convertible():
    ts = parse_reply(410, {}, b'{"reason":"Unregistered","timestamp":0}').timestamp_ms
    assert datetime.datetime.fromtimestamp(ts / 1000, datetime.UTC).year == 1970


@given(st.text(max_size=1500))
@settings(max_examples=60, deadline=None)
def test_any_text_fits_or_is_refused_by_its_byte_size(text):
    n = Notification(device=TOKEN, alert=text)
    size = len(json.dumps({"aps": {"alert": text}}, ensure_ascii=False,
                          separators=(",", ":")).encode())
    if size <= 4096:
        p = prepare(n, "t")
        assert len(p.body) == size and json.loads(p.body)["aps"]["alert"] == text
    else:
        with pytest.raises(NotificationError, match="4096"):
            prepare(n, "t")
