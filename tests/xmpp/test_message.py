"""Downstream message validation: one table row per rule, plus hypothesis properties."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccs.condition import MAX_CONDITION_TOPICS, ConditionError, parse_condition
from ccs.xmpp.message import (
    MAX_MESSAGE_ID_LEN,
    MAX_PAYLOAD,
    MAX_TOPIC_PAYLOAD,
    MAX_TTL,
    NOTIFICATION_KEYS,
    InvalidMessage,
    build_message,
    is_topic,
    new_message_id,
    payload_size,
    validate_downstream,
)

TOKEN = "bk3RNwTe3H0:CI2k_HHwgIpoDKCIZvvDMExUdFQ3P1-abc"


def msg(**fields):
    base = {"to": TOKEN, "message_id": "m-1"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()

VALID = [
    msg(),
    msg(data={"score": "5x1", "time": "15:10"}),
    msg(to="/topics/news"),
    msg(to="/topics/a-Z_0.9~%41"),
    msg(to=_DROP, condition="'TopicA' in topics && ('TopicB' in topics || 'TopicC' in topics)"),
    msg(to=_DROP, condition='"dogs" in topics || "cats" in topics'),
    msg(to=_DROP, condition="(('a' in topics))"),
    msg(notification={"title": "t", "body": "b", "color": "#7e55C3", "badge": "3"}),
    msg(notification={"badge": 42, "body_loc_args": ["FooCorp", "11.80"]}),
    msg(notification={"title_loc_args": '["a", "b"]', "title_loc_key": "K"}),
    msg(notification={k: "x" for k in ("icon", "sound", "tag", "click_action", "body_loc_key",
                                        "android_channel_id")}),
    msg(priority="normal"),
    msg(priority="high"),
    msg(time_to_live=0),
    msg(time_to_live=MAX_TTL),
    msg(collapse_key="Updates Available"),
    msg(content_available=True, mutable_content=False, delivery_receipt_requested=True,
        dry_run=False, delay_while_idle=True),
    msg(data={"collapse_key": "allowed, the server overrides it", "Google": "case matters",
              "xgoogle": "only a prefix is reserved", "fromage": "only exact from"}),
    msg(data={"k": "v" * (MAX_PAYLOAD - 1)}),
    msg(to="/topics/t", data={"k": "v" * (MAX_TOPIC_PAYLOAD - 1)}),
]


@pytest.mark.parametrize("message", VALID)
def test_valid_messages_pass_unchanged(message):
    out = validate_downstream(message)
    assert out == message
    assert out is not message


# (message, field named in the error, a word of the reason)
INVALID = [
    ("not a dict", "message", "object"),
    ({"message_id": "m"}, "to", "missing target"),
    (msg(condition="'a' in topics"), "to", "not both"),
    (msg(to=""), "to", "token"),
    (msg(to="tok en"), "to", "token"),
    (msg(to="tok\n"), "to", "token"),
    (msg(to=42), "to", "string"),
    (msg(to="x" * 5000), "to", "longer"),
    (msg(to="/topics/"), "to", "topic name"),
    (msg(to="/topics/bad name"), "to", "topic name"),
    (msg(to="/topics/a/b"), "to", "topic name"),
    (msg(to="/topics/caf\u00e9"), "to", "topic name"),
    (msg(message_id=_DROP), "message_id", "required"),
    (msg(message_id=None), "message_id", "required"),
    (msg(message_id=""), "message_id", "non-empty"),
    (msg(message_id=7), "message_id", "string"),
    (msg(message_id="m" * (MAX_MESSAGE_ID_LEN + 1)), "message_id", "longer"),
    (msg(collapse_key=1), "collapse_key", "string"),
    (msg(collapse_key=""), "collapse_key", "non-empty"),
    (msg(priority="HIGH"), "priority", "normal"),
    (msg(priority=10), "priority", "normal"),
    (msg(priority=5), "priority", "normal"),
    (msg(priority=["high"]), "priority", "normal"),
    (msg(time_to_live=-1), "time_to_live", "between"),
    (msg(time_to_live=MAX_TTL + 1), "time_to_live", "between"),
    (msg(time_to_live=True), "time_to_live", "integer"),
    (msg(time_to_live=1.5), "time_to_live", "integer"),
    (msg(time_to_live="60"), "time_to_live", "integer"),
    (msg(time_to_live=float("nan")), "time_to_live", "integer"),
    (msg(dry_run=1), "dry_run", "true or false"),
    (msg(content_available="true"), "content_available", "true or false"),
    (msg(mutable_content=0), "mutable_content", "true or false"),
    (msg(delivery_receipt_requested="yes"), "delivery_receipt_requested", "true or false"),
    (msg(delay_while_idle=[]), "delay_while_idle", "true or false"),
    (msg(registration_ids=[TOKEN]), "registration_ids", "unknown"),
    (msg(restricted_package_name="com.x"), "restricted_package_name", "unknown"),
    (msg(message_type="ack"), "message_type", "unknown"),
    ({**msg(), 3: "x"}, "3", "unknown"),
    (msg(data=["a"]), "data", "object"),
    (msg(data="k=v"), "data", "object"),
    (msg(data={"from": "x"}), "data.from", "reserved"),
    (msg(data={"gcm": "x"}), "data.gcm", "reserved"),
    (msg(data={"google": "x"}), "data.google", "reserved"),
    (msg(data={"google.x": "x"}), "data.google.x", "reserved"),
    (msg(data={"googleapis": "x"}), "data.googleapis", "reserved"),
    (msg(data={"": "x"}), "data", "empty key"),
    (msg(data={1: "x"}), "data.1", "strings"),
    (msg(data={"n": 1}), "data.n", "string"),
    (msg(data={"b": True}), "data.b", "string"),
    (msg(data={"o": {"x": "y"}}), "data.o", "string"),
    (msg(data={"z": None}), "data.z", "string"),
    (msg(data={"k": "v" * MAX_PAYLOAD}), "data", "4096"),
    (msg(data={"k": "\u00e9" * 2100}), "data", "4096"),  # 2 bytes each: bytes, not characters
    (msg(to="/topics/t", data={"k": "v" * MAX_TOPIC_PAYLOAD}), "data", "2048"),
    (msg(to=_DROP, condition="'a' in topics", data={"k": "v" * MAX_TOPIC_PAYLOAD}), "data",
     "2048"),
    (msg(notification={"title": "v" * MAX_PAYLOAD}), "notification", "4096"),
    (msg(notification="hi"), "notification", "object"),
    (msg(notification={"title": 1}), "notification.title", "string"),
    (msg(notification={"body": None}), "notification.body", "string"),
    (msg(notification={"android_channel_id": 5}), "notification.android_channel_id", "string"),
    (msg(notification={"color": "red"}), "notification.color", "#rrggbb"),
    (msg(notification={"color": "#12345"}), "notification.color", "#rrggbb"),
    (msg(notification={"color": "#1234567"}), "notification.color", "#rrggbb"),
    (msg(notification={"color": "#12345g"}), "notification.color", "#rrggbb"),
    (msg(notification={"badge": -1}), "notification.badge", "integer"),
    (msg(notification={"badge": True}), "notification.badge", "integer"),
    (msg(notification={"badge": 1.0}), "notification.badge", "integer"),
    (msg(notification={"body_loc_args": "not json"}), "notification.body_loc_args", "JSON"),
    (msg(notification={"body_loc_args": '{"a": 1}'}), "notification.body_loc_args", "array"),
    (msg(notification={"title_loc_args": ["a", 2]}), "notification.title_loc_args[1]", "string"),
    (msg(notification={"title_loc_args": "[" * 100_000}), "notification.title_loc_args", "JSON"),
    (msg(notification={"subtitle_x": "a"}), "notification.subtitle_x", "unknown"),
    (msg(to=_DROP, condition=3), "condition", "string"),
]


@pytest.mark.parametrize(("message", "field", "word"), INVALID)
def test_invalid_messages_name_the_field(message, field, word):
    with pytest.raises(InvalidMessage) as info:
        validate_downstream(message)
    err = info.value
    assert err.field == field
    assert word.lower() in err.reason.lower()
    assert str(err) == f"{field}: {err.reason}"
    assert isinstance(err, ValueError)


CONDITIONS_OK = [
    ("'a' in topics", ("a",)),
    ("'a' in topics&&'b' in topics", ("a", "b")),
    ("  'a'   in   topics  ", ("a",)),
    ("'a' in topics || 'a' in topics", ("a",)),
    ("('a' in topics && 'b' in topics) || ('c' in topics && 'd' in topics) || 'e' in topics",
     ("a", "b", "c", "d", "e")),
    ("\"x%2F\" in topics", ("x%2F",)),
]

CONDITIONS_BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("'a'", "'in'"),
    ("'a' in", "'topics'"),
    ("'a' in topic", "'topics'"),
    ("'a' intopics", "'in'"),
    ("a in topics", "quoted"),
    ("'a' in topics &&", "end of condition"),
    ("&& 'a' in topics", "found '&&'"),
    ("'a' in topics & 'b' in topics", "operator"),
    ("'a' in topics | 'b' in topics", "operator"),
    ("'a' in topics and 'b' in topics", "missing operator"),
    ("!('a' in topics)", "operator"),
    ("'a' in topics 'b' in topics", "missing operator"),
    ("('a' in topics", "')'"),
    ("'a' in topics)", "unbalanced"),
    ("(('a' in topics)", "')'"),
    ("()", "quoted"),
    ("'' in topics", "topic name"),
    ("'a b' in topics", "topic name"),
    ("'a\" in topics", "unterminated quote"),
    ("'a' in topics || 'b\" in topics || 'c' in topics", "unterminated quote"),
    ("'/topics/a' in topics", "topic name"),
    ("'a' in topics; 'b' in topics", "unexpected"),
    (" || ".join(f"'t{i}' in topics" for i in range(MAX_CONDITION_TOPICS + 1)), "at most 5"),
    ("(" * 40 + "'a' in topics" + ")" * 40, "nested"),
]


@pytest.mark.parametrize(("text", "topics"), CONDITIONS_OK)
def test_condition_parses(text, topics):
    assert parse_condition(text) == topics
    assert validate_downstream(msg(to=_DROP, condition=text))["condition"] == text


@pytest.mark.parametrize(("text", "word"), CONDITIONS_BAD)
def test_condition_rejected(text, word):
    with pytest.raises(ConditionError, match="(?i)" + _escape(word)):
        parse_condition(text)
    with pytest.raises(InvalidMessage) as info:
        validate_downstream(msg(to=_DROP, condition=text))
    assert info.value.field == "condition"


def _escape(word: str) -> str:
    import re

    return re.escape(word)


def test_normalization():
    out = validate_downstream(
        {"to": TOKEN, "message_id": "m", "time_to_live": 60.0, "collapse_key": None,
         "data": OrderedDict(a="b")}
    )
    assert out == {"to": TOKEN, "message_id": "m", "time_to_live": 60, "data": {"a": "b"}}
    assert type(out["time_to_live"]) is int
    assert type(out["data"]) is dict


def test_payload_size_counts_utf8_keys_and_values_of_data_and_notification():
    m = {"data": {"ab": "\u00e9"}, "notification": {"title": "x", "badge": 12,
                                                     "body_loc_args": ["a", "b"]}}
    assert payload_size(m) == (2 + 2) + (5 + 1) + (5 + 2) + (13 + len('["a","b"]'))
    assert payload_size({"to": TOKEN}) == 0


def test_is_topic():
    assert is_topic("/topics/x")
    assert not is_topic(TOKEN)
    assert not is_topic(None)
    assert not is_topic("topics/x")


def test_new_message_id_unique_and_short():
    ids = {new_message_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(0 < len(i) <= 24 and i.isalnum() for i in ids)


def test_build_message_fills_id_and_leaves_out_none():
    m = build_message(TOKEN, data={"a": "b"}, priority="high", dry_run=None)
    assert set(m) == {"to", "message_id", "data", "priority"}
    assert m["message_id"]
    assert build_message(TOKEN, message_id="x")["message_id"] == "x"
    m = build_message(condition="'a' in topics", notification={"title": "t"},
                      time_to_live=0, delivery_receipt_requested=True, collapse_key="c",
                      content_available=True, mutable_content=True, delay_while_idle=False,
                      dry_run=True)
    assert m["condition"] == "'a' in topics" and m["time_to_live"] == 0
    assert "to" not in m


def test_build_message_validates():
    with pytest.raises(InvalidMessage, match="^time_to_live: "):
        build_message(TOKEN, time_to_live=MAX_TTL + 1)
    with pytest.raises(InvalidMessage, match="^to: "):
        build_message()


# ---- properties -------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
known_keys = st.sampled_from(
    ["to", "condition", "message_id", "collapse_key", "priority", "time_to_live", "data",
     "notification", "dry_run", "content_available", "mutable_content",
     "delivery_receipt_requested", "delay_while_idle"]
)
note_values = st.dictionaries(st.sampled_from(sorted(NOTIFICATION_KEYS)) | st.text(max_size=5),
                              json_values, max_size=4)
json_messages = st.dictionaries(
    known_keys | st.text(max_size=10),
    json_values | note_values | st.text(alphabet="'()&| intopcsab!\"", max_size=40),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(json_values | json_messages)
def test_arbitrary_input_only_raises_invalid_message(value):
    try:
        out = validate_downstream(value)
    except InvalidMessage as e:
        assert e.field and e.reason
    else:
        assert isinstance(out, dict) and "message_id" in out


tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_-",
                 min_size=1, max_size=200)
topic_names = st.text(alphabet="abcXYZ019-_.~%", min_size=1, max_size=12)


def condition_trees(names):
    leaf = names.map(lambda n: f"'{n}' in topics")
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            inner.map(lambda e: f"({e})"),
            st.tuples(inner, st.sampled_from(["&&", "||", " && ", " || "]), inner).map("".join),
        ),
        max_leaves=6,
    )


conditions = condition_trees(st.sampled_from(["a", "b", "c", "d", "e"]))
data_keys = st.text(min_size=1, max_size=10).filter(
    lambda k: k not in ("from", "gcm") and not k.startswith("google")
)
valid_messages = st.fixed_dictionaries(
    {"message_id": st.text(min_size=1, max_size=40)},
    optional={
        "data": st.dictionaries(data_keys, st.text(max_size=30), max_size=6),
        "notification": st.fixed_dictionaries(
            {}, optional={"title": st.text(max_size=20), "body": st.text(max_size=40),
                          "color": st.from_regex(r"#[0-9a-fA-F]{6}", fullmatch=True),
                          "badge": st.integers(0, 999) | st.text(max_size=3),
                          "body_loc_args": st.lists(st.text(max_size=5), max_size=3)}),
        "priority": st.sampled_from(["normal", "high"]),
        "time_to_live": st.integers(0, MAX_TTL),
        "collapse_key": st.text(min_size=1, max_size=20),
        "dry_run": st.booleans(),
        "delivery_receipt_requested": st.booleans(),
    },
)
targets = st.one_of(
    tokens.map(lambda t: {"to": t}),
    topic_names.map(lambda n: {"to": "/topics/" + n}),
    conditions.map(lambda c: {"condition": c}),
)


@settings(max_examples=300, deadline=None)
@given(valid_messages, targets)
def test_generated_valid_messages_pass(message, target):
    message = {**message, **target}
    assert validate_downstream(message) == message
    # and survive a JSON round trip, as they would on the wire
    assert validate_downstream(json.loads(json.dumps(message))) == message


@settings(max_examples=300, deadline=None)
@given(conditions)
def test_generated_conditions_parse(text):
    topics = parse_condition(text)
    assert 1 <= len(topics) <= 5
    assert all(f"'{t}'" in text for t in topics)


@settings(max_examples=300, deadline=None)
@given(conditions, st.data())
def test_unbalancing_a_condition_is_rejected(text, data):
    parens = [i for i, ch in enumerate(text) if ch in "()"]
    if parens:
        i = data.draw(st.sampled_from(parens))
        broken = text[:i] + text[i + 1:]
    else:
        broken = text + data.draw(st.sampled_from([")", " &&", "(", " ||", " !"]))
    with pytest.raises(ConditionError):
        parse_condition(broken)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.text(max_size=30), max_size=8))
def test_payload_size_is_utf8_bytes(data):
    expected = sum(len(k.encode("utf-8", "surrogatepass")) + len(v.encode("utf-8",
                   "surrogatepass")) for k, v in data.items())
    assert payload_size({"data": data}) == expected


def test_str_and_int_subclasses_are_taken():
    from enum import IntEnum, StrEnum

    class Priority(StrEnum):
        HIGH = "high"

    class Ttl(IntEnum):
        HOUR = 3600

    out = validate_downstream(msg(priority=Priority.HIGH, time_to_live=Ttl.HOUR))
    assert out["priority"] == "high"
    assert type(out["time_to_live"]) is int and out["time_to_live"] == 3600


@settings(max_examples=400, deadline=None)
@given(valid_messages, targets, known_keys | st.text(max_size=6), json_values | note_values)
def test_one_bad_field_is_named_or_accepted(message, target, key, value):
    message = {**message, **target, key: value}
    try:
        out = validate_downstream(message)
    except InvalidMessage as e:
        # the error names the changed field (or the target rule / payload size it broke)
        top = e.field.split(".")[0].split("[")[0]
        assert e.field in (key, repr(key)) or top in (key, "to", "message_id", "data",
                                                      "notification")
    else:
        assert out == {k: v for k, v in message.items() if v is not None} or key == "time_to_live"
