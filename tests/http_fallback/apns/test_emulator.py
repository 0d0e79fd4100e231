"""The APNs emulator on its own: its request rules (pure), and raw HTTP/2 requests that our
client would never send, over a real TLS socket."""

import json

import pytest

from ccs.transport.h2conn import H2Channel, client_config, open_tls
from ccs.transport.tls import client_context
from http_fallback.apns.emulator_rules import check_request, malformed
from tests.apns_support import TOPIC, emulator, token

OK_HEADERS = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"x"),
              (b":path", b"/3/device/" + token(1).encode()), (b"apns-topic", TOPIC.encode()),
              (b"apns-push-type", b"alert")]
TOPICS = frozenset({TOPIC})


def with_header(name, value):
    """OK_HEADERS with one replaced in place (pseudo-headers stay first), added, or removed."""
    out = [(k, value if k == name else v) for k, v in OK_HEADERS if k != name or value]
    return out if any(k == name for k, _ in out) or not value else out + [(name, value)]


@pytest.mark.parametrize("headers,body,reason", [
    (OK_HEADERS, b'{"aps":{}}', None),
    (with_header(b":method", b"GET"), b"{}", "MethodNotAllowed"),
    (with_header(b":path", b"/2/device/ab"), b"{}", "BadPath"),
    (with_header(b":path", b"/3/device/"), b"{}", "MissingDeviceToken"),
    (with_header(b":path", b"/3/device/xyz"), b"{}", "BadDeviceToken"),
    (with_header(b"apns-topic", None), b"{}", "MissingTopic"),
    (with_header(b"apns-topic", b"com.other"), b"{}", "TopicDisallowed"),
    (with_header(b"apns-push-type", b"fax"), b"{}", "InvalidPushType"),
    (with_header(b"apns-push-type", b"voip"), b"{}", "BadTopic"),
    (OK_HEADERS + [(b"apns-priority", b"7")], b"{}", "BadPriority"),
    (with_header(b"apns-push-type", b"background") + [(b"apns-priority", b"10")], b"{}",
     "BadPriority"),
    (OK_HEADERS + [(b"apns-expiration", b"soon")], b"{}", "BadExpirationDate"),
    (OK_HEADERS + [(b"apns-id", b"nope")], b"{}", "BadMessageId"),
    (OK_HEADERS + [(b"apns-collapse-id", b"c" * 65)], b"{}", "BadCollapseId"),
    (OK_HEADERS + [(b"apns-topic", TOPIC.encode())], b"{}", "DuplicateHeaders"),
    (OK_HEADERS, b"", "PayloadEmpty"),
    (OK_HEADERS, b'{"p":"' + b"x" * 4100 + b'"}', "PayloadTooLarge"),
    (with_header(b"apns-push-type", b"voip") + [(b"apns-topic", b"com.example.app.voip")][:0],
     b"{}", "BadTopic"),
    (OK_HEADERS, b"[1]", "BadPayload"),
])
def test_rules(headers, body, reason):
    assert check_request(headers, body, TOPICS, topic_required=True)[0] == reason


def test_voip_topic_and_larger_payload_pass():
    headers = [(k, v) for k, v in OK_HEADERS if k not in (b"apns-topic", b"apns-push-type")]
    headers += [(b"apns-topic", b"com.example.app.voip"), (b"apns-push-type", b"voip")]
    body = b'{"p":"' + b"x" * 5000 + b'"}'
    assert check_request(headers, body, TOPICS, topic_required=True)[0] is None


@pytest.mark.parametrize("headers,why", [
    (OK_HEADERS, None),
    (OK_HEADERS + [(b"Apns-Priority", b"10")], "not lowercase"),
    (OK_HEADERS + [(b"connection", b"keep-alive")], "connection-specific"),
    (OK_HEADERS + [(b"te", b"gzip")], "te other"),
    (OK_HEADERS + [(b"te", b"trailers")], None),
    (OK_HEADERS[:4] + [(b":path", b"/3/device/ab")] + OK_HEADERS[4:], "repeated"),
    (OK_HEADERS[:4] + [(b":status", b"200")] + OK_HEADERS[4:], "unknown"),
    (OK_HEADERS[4:] + OK_HEADERS[:4], "after a regular header"),
    ([h for h in OK_HEADERS if h[0] != b":scheme"], "missing"),
])
def test_malformed_header_blocks(headers, why):
    found = malformed(headers)
    assert (found is None) if why is None else (why in found), found


def raw_request(emu, headers, body):
    """One request over a bare h2 connection; returns (status, JSON body)."""
    import h2.events as ev
    sock = open_tls("127.0.0.1", emu.port, client_context(emu.ca_file, alpn=["h2"]), None, 5)
    ch = H2Channel(sock, client_config())
    ch.exchange(lambda c: c.initiate_connection())

    def send(c):
        c.send_headers(1, headers)
        c.send_data(1, body, end_stream=True)
    ch.exchange(send)
    status, data = None, b""
    while True:
        chunk = ch.recv()
        if not chunk:
            return None, None
        for e in ch.feed(chunk, lambda e: e):
            if isinstance(e, ev.ConnectionTerminated):
                return None, None
            if isinstance(e, ev.StreamReset):
                ch.close()
                return "reset", e.error_code
            if isinstance(e, ev.ResponseReceived):
                status = int(dict(e.headers)[b":status"])
            elif isinstance(e, ev.DataReceived):
                data += e.data
            elif isinstance(e, ev.StreamEnded):
                ch.close()
                return status, json.loads(data) if data else None


def test_raw_requests_get_apns_answers(pki):
    with emulator(pki) as emu:
        status, body = raw_request(emu, OK_HEADERS, b'{"aps":{}}')
        assert (status, body["reason"]) == (403, "MissingProviderToken")
        status, body = raw_request(emu, OK_HEADERS + [(b"authorization", b"bearer x.y.z")],
                                   b'{"aps":{}}')
        assert (status, body["reason"]) == (403, "InvalidProviderToken")
        status, body = raw_request(emu, with_header(b":method", b"PUT"), b"{}")
        assert (status, body["reason"]) == (405, "MethodNotAllowed")
        assert [s.reason for s in emu.seen] == ["MissingProviderToken", "InvalidProviderToken",
                                                "MethodNotAllowed"]


def test_a_malformed_request_is_reset_and_the_connection_stays(pki):
    from h2.errors import ErrorCodes

    with emulator(pki) as emu:
        assert raw_request(emu, OK_HEADERS + [(b"Apns-Priority", b"10")], b"{}") == (
            "reset", ErrorCodes.PROTOCOL_ERROR)
        assert emu.malformed == 1 and not emu.seen  # no APNs rule looked at it
        status, body = raw_request(emu, OK_HEADERS, b'{"aps":{}}')
        assert (status, body["reason"]) == (403, "MissingProviderToken")
