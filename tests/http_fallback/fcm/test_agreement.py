"""The client's checks and the emulator's, written apart, agree on generated messages: what the
client lets through the emulator accepts, and what the emulator accepts the client lets through
(so the client neither wastes requests nor refuses what FCM would take)."""

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from http_fallback.fcm.emulator_rules import Violation, check_request
from http_fallback.fcm.validate import MessageError, validate_message

SAFE = string.ascii_letters + string.digits + "-_.~%"
text = st.text(alphabet=string.printable, max_size=12)
name = st.text(alphabet=SAFE, min_size=1, max_size=10)
keys = st.one_of(name, st.sampled_from(["from", "google.x", "gcm.y", "message_type", "", "ok"]))
values = st.one_of(text, st.integers(), st.booleans(), st.none())
data = st.dictionaries(keys, st.one_of(text, text, values), max_size=4)
durations = st.one_of(
    st.integers(0, 2_500_000).map(lambda n: f"{n}s"),
    st.floats(0, 100, allow_nan=False).map(lambda f: f"{f:.3f}s"),
    st.sampled_from(["1h", "3600", "-1s", "1.s", "0.0000000001s", "", "10s"]),
    st.integers(0, 10))
colors = st.one_of(st.from_regex(r"#[0-9a-fA-F]{6}", fullmatch=True),
                   st.sampled_from(["red", "#12345", "#1234567", "#GGGGGG"]))
android_note = st.fixed_dictionaries({}, optional={
    "title": st.one_of(text, st.integers()), "color": colors, "body_loc_key": name,
    "body_loc_args": st.lists(st.one_of(text, st.integers()), max_size=2),
    "notification_priority": st.sampled_from(["PRIORITY_HIGH", "priority_min", "loud"]),
    "visibility": st.sampled_from(["PUBLIC", "secret", "everyone"]),
    "notification_count": st.one_of(st.integers(-3, 3), text),
    "vibrate_timings": st.lists(durations, max_size=2), "sticky": st.one_of(st.booleans(), text),
    "bogus": text})
android = st.fixed_dictionaries({}, optional={
    "ttl": durations, "priority": st.sampled_from(["HIGH", "normal", "urgent"]),
    "collapse_key": st.one_of(text, st.integers()), "data": data, "notification": android_note,
    "direct_boot_ok": st.one_of(st.booleans(), text),
    "fcm_options": st.fixed_dictionaries({}, optional={
        "analytics_label": st.one_of(name, text)})})
apns = st.fixed_dictionaries({}, optional={
    "headers": st.dictionaries(name, st.one_of(text, st.integers()), max_size=2),
    "payload": st.fixed_dictionaries({}, optional={"aps": st.one_of(
        st.just({"badge": 1}), text)}),
    "fcm_options": st.fixed_dictionaries({}, optional={"image": st.one_of(text, st.integers())})})
webpush = st.fixed_dictionaries({}, optional={
    "headers": st.dictionaries(name, text, max_size=2),
    "fcm_options": st.fixed_dictionaries({}, optional={
        "link": st.sampled_from(["https://x.example/", "http://x.example/", "x"])})})
conditions = st.sampled_from([
    "'a' in topics", "'a' in topics && ('b' in topics || 'c' in topics)", "'a b' in topics",
    "a in topics", "'a' in topics || 'b' in topics || 'c' in topics || 'd' in topics || "
    "'e' in topics || 'f' in topics"])
messages = st.fixed_dictionaries({}, optional={
    "token": st.text(alphabet=SAFE.replace("~", "").replace("%", "") + ":", min_size=1,
                     max_size=20),
    "topic": st.one_of(name, st.sampled_from(["/topics/news", "a b", "ü"])),
    "condition": conditions, "data": data,
    "notification": st.fixed_dictionaries({}, optional={"title": st.one_of(text, st.integers()),
                                                        "image": text}),
    "android": android, "apns": apns, "webpush": webpush,
    "fcm_options": st.fixed_dictionaries({}, optional={"analytics_label": st.one_of(name, text)}),
})


def _client(message):
    try:
        validate_message(message)
        return None
    except MessageError as e:
        return e.field


def _emulator(message):
    try:
        check_request({"message": message})
        return None
    except Violation as v:
        return v.field


@settings(max_examples=400, deadline=None)
@given(messages)
def test_client_and_emulator_agree(message):
    client, emulator = _client(message), _emulator(message)
    assert (client is None) == (emulator is None), (client, emulator)
