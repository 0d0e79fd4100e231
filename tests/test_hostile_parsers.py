"""Every parser of inbound protocol data, fed arbitrary input: only its documented error type
ever escapes, and what comes back is typed as documented."""

from __future__ import annotations

import datetime
import json
import struct

import pytest
from gevent.server import StreamServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ccs.transport.http11 import Headers, HttpError, HttpPool
from ccs.xmpp import protocol
from ccs.xmpp.emulator.xmlstream import StanzaReceived, StreamParser, XmlStreamError
from ccs.xmpp.emulator.xmlstream import StreamClosed as EmuStreamClosed
from ccs.xmpp.stream import Event, ProtocolViolation, State
from http_fallback.apns import protocol as apns
from http_fallback.apns.binary import frames
from http_fallback.c2dm import protocol as c2dm
from http_fallback.fcm import protocol as fcm
from http_fallback.legacy import protocol as legacy
from http_fallback.legacy.model import LegacyMessage
from http_fallback.mpns import protocol as mpns
from http_fallback.retry_policy import parse_retry_after
from tests.xmpp.test_stream import logged_in

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=15)
DEEP = b"[" * 100_000  # json.loads raises RecursionError for this, not ValueError
HUGE_NUMBERS = [b'{"timestamp":1e999}', b"1" * 5000, b'{"n":-1e999}', b"NaN", b"Infinity"]


def bodies(*keys: str) -> st.SearchStrategy[bytes]:
    """JSON bodies that often carry the keys a parser looks for, plus raw bytes."""
    shaped = st.fixed_dictionaries({}, optional={k: json_values for k in keys})
    return st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                     shaped.map(lambda v: json.dumps(v).encode()))


# -- CCS ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [DEEP.decode(), '{"message_id":' + "9" * 5000 + "}",
                                  '{"message_type":["ack"],"message_id":"m"}'])
def test_classify_hostile_json_is_malformed_or_typed(text):
    assert isinstance(protocol.classify(text), protocol.Malformed | protocol.Upstream)


@FAST
@given(st.fixed_dictionaries({}, optional={
    "message_type": st.sampled_from(["ack", "nack", "receipt", "control", None]) | json_values,
    "message_id": json_values, "from": json_values, "error": json_values,
    "registration_id": json_values, "control_type": json_values, "data": json_values,
    "time_to_live": json_values, "category": json_values}))
def test_classify_fields_of_any_type_give_typed_values(obj):
    msg = protocol.classify(json.dumps(obj))
    if isinstance(msg, protocol.Ack | protocol.Nack):
        assert isinstance(msg.message_id, str)
        assert msg.sender is None or isinstance(msg.sender, str)
    if isinstance(msg, protocol.Nack):
        assert isinstance(msg.error, str)
    if isinstance(msg, protocol.Upstream):
        assert isinstance(msg.data, dict) and isinstance(msg.sender, str)
        assert msg.time_to_live is None or type(msg.time_to_live) is int
    if isinstance(msg, protocol.Control):
        assert isinstance(msg.control_type, str)


xml_bits = st.sampled_from([
    b"<message>", b"</message>", b"<gcm xmlns='google:mobile:data'>", b"</gcm>", b"{}",
    b"<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>", b"<iq type='set' id='x'/>",
    b"<message type='error'><error code='400'/></message>", b"&amp;", b"&lt;", b"&bogus;",
    b"<!DOCTYPE x>", b"<!ENTITY a 'b'>", b"<![CDATA[x]]>", b"<!--c-->", b"<?pi x?>",
    b"\xff\xfe", b"\xc3", b"\x00", b" ", b"</stream:stream>", b"<stream:error/>", b"<", b">",
    b"'", b"=", b"<a b='1' b='2'/>", b"<x:y/>"])


@FAST
@given(st.lists(xml_bits | st.binary(max_size=30), max_size=12))
def test_stream_after_login_returns_events_or_raises_violation(chunks):
    s = logged_in()
    for chunk in chunks:
        try:
            events = s.receive(chunk)
        except ProtocolViolation:
            return
        assert all(isinstance(e, Event) for e in events)
        s.data_to_send()
        if s.state is State.CLOSED:
            return


def test_stream_refuses_a_huge_unfinished_start_tag():
    s = logged_in()
    s.receive(b"<message a='")
    with pytest.raises(ProtocolViolation, match="too large"):
        for _ in range(40):
            s.receive(b"x" * 65536)


def test_stream_refuses_a_huge_run_of_text_between_stanzas():
    s = logged_in()
    with pytest.raises(ProtocolViolation, match="too large"):
        for _ in range(40):
            s.receive(b"y" * 65536)


# -- APNs HTTP/2 ------------------------------------------------------------------------------

@FAST
@given(st.integers(0, 999), bodies("reason", "timestamp"),
       st.dictionaries(st.sampled_from([b"apns-id", b"x"]), st.binary(max_size=40)))
@example(410, b'{"reason":"Unregistered","timestamp":1e999}', {})
@example(410, b'{"reason":["x"],"timestamp":"99999999999999999999"}', {})
@example(410, DEEP, {})
def test_apns_reply_is_typed_and_its_timestamp_convertible(status, body, headers):
    reply = apns.parse_reply(status, headers, body)
    assert reply.apns_id is None or isinstance(reply.apns_id, str)
    assert isinstance(reply.reason, str) or status == 200
    if reply.timestamp_ms is not None:
        assert datetime.datetime.fromtimestamp(reply.timestamp_ms / 1000, datetime.UTC)
    assert apns.classify(reply.reason, status) in apns.ReasonClass


@FAST
@given(bodies("reason"))
@example(DEEP)
@example(b'{"reason":{"a":1}}')
def test_goaway_debug_data_gives_a_string_or_none(debug):
    reason = apns.goaway_reason(debug)
    assert reason is None or isinstance(reason, str)


# -- FCM v1 -----------------------------------------------------------------------------------

fcm_error_bodies = st.fixed_dictionaries({"error": st.fixed_dictionaries({}, optional={
    "code": json_values, "status": json_values, "message": json_values,
    "details": json_values | st.lists(st.fixed_dictionaries({}, optional={
        "@type": st.sampled_from([fcm.FCM_ERROR_TYPE, fcm.BAD_REQUEST_TYPE]),
        "errorCode": json_values, "fieldViolations": json_values}), max_size=3)})
}).map(lambda v: json.dumps(v).encode())


@FAST
@given(st.integers(100, 599), bodies("error") | fcm_error_bodies,
       st.none() | st.text(max_size=40) | st.sampled_from(["inf", "1e999", "nan", "-5", "²"]))
@example(400, DEEP, None)
@example(400, b'{"error":{"details":5}}', None)
def test_fcm_error_body_is_typed(status, body, retry_after):
    info = fcm.parse_error(status, body, retry_after, 1_700_000_000.0)
    assert isinstance(info.code, str) and info.code
    assert info.message is None or isinstance(info.message, str)
    assert all(isinstance(f, str) and isinstance(d, str) for f, d in info.violations)
    assert info.retry_after is None or 0 <= info.retry_after < float("inf")
    decision = fcm.classify(info, to_token=True)
    assert decision.action in fcm.Action
    info.names_token()


@FAST
@given(bodies("name", "access_token", "expires_in", "results"))
@example(DEEP)
@example(b"[]")
@example(b'{"access_token":"t","expires_in":1e999}')
@example(b'{"access_token":"t\\r\\nX-Evil: 1","expires_in":60}')
def test_fcm_success_token_and_topic_answers_raise_only_value_error(body):
    for parse in (fcm.parse_name, lambda b: fcm.parse_token_answer(b, 0.0, 60.0),
                  lambda b: fcm.parse_topic_results(b, 1)):
        try:
            value = parse(body)
        except ValueError:
            continue
        if isinstance(value, list):
            assert all(v is None or isinstance(v, str) for v in value)
        elif isinstance(value, fcm.AccessToken):
            assert value.refresh_at <= value.expires_at < float("inf")
            assert value.value.isascii() and value.value.isprintable() and " " not in value.value
        else:
            assert isinstance(value, str)


@FAST
@given(st.text(max_size=40) | st.sampled_from(["²", "٣", "9" * 400, "inf", "Mon, 99 Foo"]))
def test_retry_after_is_a_finite_delay_or_none(value):
    for parse in (parse_retry_after, fcm.parse_retry_after):
        wait = parse(value, 1_700_000_000.0)
        assert wait is None or 0 <= wait < float("inf")


# -- legacy, C2DM, MPNS -------------------------------------------------------------------------

legacy_bodies = st.fixed_dictionaries({}, optional={
    "multicast_id": json_values, "success": json_values, "failure": json_values,
    "canonical_ids": json_values, "message_id": json_values, "error": json_values,
    "failed_registration_ids": json_values,
    "results": st.lists(st.fixed_dictionaries({}, optional={
        "message_id": json_values, "registration_id": json_values, "error": json_values}),
        max_size=3) | json_values,
}).map(lambda v: json.dumps(v).encode())


@FAST
@given(st.sampled_from([200, 200, 200, 400, 401, 500, 503, 302]), bodies("results") | legacy_bodies,
       st.booleans(), st.integers(1, 3))
@example(200, b'{"success":"a","failure":1,"failed_registration_ids":5}', False, 1)
@example(200, DEEP, False, 1)
def test_legacy_answer_gives_one_verdict_per_target(status, body, plain, count):
    msg = (LegacyMessage(to="tok") if count == 1 else
           LegacyMessage(registration_ids=[f"t{i}" for i in range(count)]))
    answer = legacy.parse_answer(msg, status, body, plain_text=plain, now=1_700_000_000.0)
    verdicts = legacy.judge(answer, count)
    assert len(verdicts) == count
    for v in verdicts:
        assert v.error is None or isinstance(v.error, str)
        assert v.message_id is None or isinstance(v.message_id, str)


@FAST
@given(st.integers(100, 599), st.binary(max_size=200) | st.lists(
    st.sampled_from(["id=1", "Error=QuotaExceeded", "Error=", "Auth=x", "=", "Error=NotRegistered",
                     "a=b=c", "\xff"]), max_size=4).map(lambda ls: "\n".join(ls).encode()),
    st.none() | st.text(max_size=20))
@example(200, b"Auth=abc\x00def", "\r")
def test_c2dm_answers_are_typed(status, body, retry_after):
    login = c2dm.parse_login(status, body)
    assert (login.auth is None) != (login.error is None)
    answer = c2dm.parse_send(status, body, retry_after=retry_after, now=1_700_000_000.0,
                             update_client_auth=retry_after)
    assert answer.action in c2dm.Action
    assert answer.retry_after is None or 0 <= answer.retry_after < float("inf")
    for token in (login.auth, answer.new_auth):  # they go into an Authorization header
        assert token is None or (token.isascii() and token.isprintable() and " " not in token)


@FAST
@given(st.integers(100, 599), st.none() | st.dictionaries(
    st.sampled_from(["X-NotificationStatus", "X-SubscriptionStatus",
                     "X-DeviceConnectionStatus", "Retry-After"]),
    st.text(max_size=20) | st.sampled_from(["Received", "QueueFull", "Expired", "Dropped"])))
def test_mpns_headers_are_judged(status, headers):
    result = mpns.judge(status, Headers(list(headers.items())) if headers is not None else None)
    assert result.status_code == status
    assert set(result.as_results()) >= {"statusCode", "notificationStatus"}


# -- APNs binary interface ------------------------------------------------------------------------

@FAST
@given(st.binary(max_size=12))
def test_binary_error_response_parses_or_raises_frame_error(data):
    try:
        status, ident = frames.parse_error(data)
    except frames.FrameError:
        assert len(data) < frames.ERROR_SIZE or data[0] != 8
        return
    assert (status, ident) == struct.unpack(">BI", data[1:6])


@FAST
@given(st.binary(max_size=200), st.lists(st.tuples(st.integers(0, 2**32 - 1),
                                                   st.binary(min_size=32, max_size=32)),
                                         max_size=4))
def test_feedback_tuples_are_38_bytes_each_or_frame_error(noise, good):
    data = b"".join(frames.encode_feedback(ts, tok) for ts, tok in good)
    assert frames.parse_feedback(data) == (good, b"")
    try:
        tuples, rest = frames.parse_feedback(data + noise)
    except frames.FrameError:
        return
    assert len(rest) < frames.FEEDBACK_SIZE
    assert all(len(tok) == frames.TOKEN_SIZE for _, tok in tuples)


def test_feedback_token_length_field_cannot_reach_into_the_next_tuple():
    bad = struct.pack(">IH", 1, 0xFFFF) + b"a" * 32 + frames.encode_feedback(2, b"b" * 32)
    with pytest.raises(frames.FrameError, match="token length"):
        frames.parse_feedback(bad)


# -- HTTP/1.1 responses, over a real loopback socket ---------------------------------------------

class CannedServer:
    """Answers each request with the bytes in `answer`, then closes the connection."""

    def __init__(self) -> None:
        self.answer = b""
        self.server = StreamServer(("127.0.0.1", 0), self._handle)

    def _handle(self, sock, _addr) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return
            data += chunk
        sock.sendall(self.answer)
        sock.close()


@pytest.fixture(scope="module")
def canned():
    server = CannedServer()
    server.server.start()
    yield server
    server.server.stop(timeout=1)


status_lines = st.one_of(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 204", b"HTTP/1.1 \xb2 OK", b"HTTP/1.1 20 x",
                     b"HTTP/2 200 OK", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
                     b"HTTP/1.1 -20 OK", b"HTTP/1.1 \xd9\xa3\xd9\xa3\xd9\xa3 OK"]),
    st.binary(max_size=30))
header_lines = st.lists(st.sampled_from([
    b"Content-Length: 5", b"Content-Length: +5", b"Content-Length: 5_0", b"Content-Length: -1",
    b"Content-Length: 99999999999999999999999", b"Content-Length: 5, 6", b"Content-Length: \xb2",
    b"Transfer-Encoding: chunked", b"Connection: close", b" folded", b"NoColon", b": empty",
]) | st.binary(max_size=20).filter(lambda b: b"\r\n" not in b), max_size=4)
chunked_bodies = st.lists(st.sampled_from([
    b"5\r\nhello\r\n", b"-5\r\n", b"0x5\r\nhello\r\n", b"5_0\r\n", b"ffffffffffffffff\r\n",
    b"3;ext=1\r\nabc\r\n", b"0\r\n\r\n", b"0\r\nTrailer: x\r\n\r\n", b"5\r\nhel", b"5\r\nhelloXX",
]), max_size=4).map(b"".join)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(status_lines, header_lines, chunked_bodies | st.binary(max_size=40))
def test_any_response_is_a_response_or_an_http_error(canned, status, headers, body):
    canned.answer = b"\r\n".join([status, *headers]) + b"\r\n\r\n" + body
    pool = HttpPool(f"http://127.0.0.1:{canned.server.server_port}", timeout=5,
                    max_response_bytes=1024)
    try:
        response = pool.request("GET", "/")
    except HttpError as e:
        assert e.kind in {"closed", "malformed", "too_large", "reset", "timeout"}
        return
    finally:
        pool.close()
    assert 100 <= response.status <= 999 and isinstance(response.body, bytes)
    assert len(response.body) <= 1024
    framed = response.status >= 200 and response.status not in (204, 304)
    if framed and "content-length" in response.headers and "chunked" not in \
            response.headers.get("transfer-encoding", ""):
        assert len(response.body) == int(response.headers["content-length"])


@FAST
@given(st.lists(st.binary(max_size=40) | st.sampled_from([
    b"\x02\x00\x00\x00\x04\x01\x00\x09", b"\x02\x00\x00\x00\x02\x01", b"\x00\x00\x20",
    b"\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x20"]), max_size=6))
@example([b"\x02\x00\x00\x00\x02\x01\x00"])  # an item header cut by the frame's end
def test_gateway_frame_reader_yields_frames_or_raises_frame_error(chunks):
    reader = frames.FrameReader()
    for chunk in chunks:
        try:
            got = reader.feed(chunk)
        except frames.FrameError:
            return
        assert all(isinstance(f, frames.Frame) for f in got)


def test_gateway_frame_item_cannot_reach_into_the_next_frame():
    with pytest.raises(frames.FrameError, match="past the frame"):
        frames.FrameReader().feed(b"\x02\x00\x00\x00\x04\x01\x00\x09x" + b"y" * 20)


# -- the CCS emulator's inbound parser ----------------------------------------------------------

EMU_OPEN = (b"<stream:stream to='gcm.googleapis.com' version='1.0' xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams'>")


@FAST
@given(st.lists(xml_bits | st.binary(max_size=30), max_size=12))
def test_emulator_stream_parser_raises_only_xml_stream_error(chunks):
    parser = StreamParser()
    parser.feed(EMU_OPEN)
    for chunk in chunks:
        try:
            events = parser.feed(chunk)
        except XmlStreamError:
            return
        assert all(isinstance(e, StanzaReceived | EmuStreamClosed) for e in events)


@pytest.mark.parametrize("opening", [b"<message a='", b""])
def test_emulator_refuses_an_endless_start_tag_or_text(opening):
    parser = StreamParser()
    parser.feed(EMU_OPEN + opening)
    with pytest.raises(XmlStreamError, match="policy-violation"):
        for _ in range(8):
            parser.feed(b"x" * 65536)
