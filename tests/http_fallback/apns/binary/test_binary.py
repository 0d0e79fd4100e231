"""The binary interface: frames and the resend cache (pure), then client and feedback against
the emulator over TLS with client certificates."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccs.outcome import Status, TokenEventKind
from http_fallback.apns.auth import certificate_context
from http_fallback.apns.binary.client import BinaryClient
from http_fallback.apns.binary.emulator import BinaryEmulator
from http_fallback.apns.binary.feedback import Feedback
from http_fallback.apns.binary.frames import (
    FrameError,
    FrameReader,
    encode_enhanced,
    encode_error,
    encode_feedback,
    encode_frame,
    encode_simple,
    parse_error,
    parse_feedback,
)
from http_fallback.apns.model import Notification
from tests.helpers import wait_until

TOK = "0f" * 32


def test_frames_round_trip_in_pieces():
    data = (encode_simple(TOK, b'{"a":1}') + encode_enhanced(7, 99, TOK, b'{"b":2}')
            + encode_frame(8, 100, TOK, b'{"c":3}', priority=5))
    reader = FrameReader()
    frames = []
    for i in range(0, len(data), 5):
        frames += reader.feed(data[i:i + 5])
    assert [(f.command, f.identifier, f.expiry, f.priority) for f in frames] == [
        (0, 0, 0, 10), (1, 7, 99, 10), (2, 8, 100, 5)]
    assert all(f.token == bytes.fromhex(TOK) for f in frames)
    assert frames[2].payload == b'{"c":3}'
    with pytest.raises(FrameError):
        FrameReader().feed(b"\x09rest")
    with pytest.raises(FrameError) as e:
        encode_enhanced(1, 0, "ab", b"{}")
    assert e.value.field == "device"


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8),
       st.integers(min_value=1, max_value=64))
@settings(max_examples=50, deadline=None)
def test_reader_survives_any_split(payloads, step):
    data = b"".join(encode_frame(i, i * 7, TOK, p) if i % 2 else encode_enhanced(i, 0, TOK, p)
                    for i, p in enumerate(payloads))
    reader = FrameReader()
    frames = []
    for i in range(0, len(data), step):
        frames += reader.feed(data[i:i + step])
    assert [f.payload for f in frames] == payloads
    assert [f.identifier for f in frames] == list(range(len(payloads)))


def test_error_and_feedback_parsing():
    assert parse_error(encode_error(8, 4242)) == (8, 4242)
    data = encode_feedback(1000, TOK) + encode_feedback(2000, "ee" * 32) + b"\x00\x01"
    tuples, rest = parse_feedback(data)
    assert tuples == [(1000, bytes.fromhex(TOK)), (2000, bytes.fromhex("ee" * 32))]
    assert rest == b"\x00\x01"


@pytest.fixture
def gateway(pki):
    with BinaryEmulator(pki) as emu:
        yield emu


def context(pki):
    return certificate_context(ca_file=pki.ca_file, cert_file=pki.client_cert_file,
                               key_file=pki.client_key_file)


@pytest.mark.parametrize("command", [1, 2])
def test_error_response_resends_what_followed(pki, gateway, command):
    client = BinaryClient("127.0.0.1", gateway.gateway_port, context(pki), command=command,
                          quiet_period=1.0, reconnect_base=0.01)
    events = []
    client.token_events.add(events.append)
    bad = "66" * 32
    gateway.reject(bad, 8)
    tokens = [f"{i:02x}" * 32 for i in range(10)]
    tokens[3] = bad
    client.start()
    try:
        results = [client.send(Notification(device=t, alert=f"n{i}")) for i, t in
                   enumerate(tokens)]
        outs = [r.get(10) for r in results]
        assert outs[3].status is Status.FAILED and outs[3].error == "InvalidToken"
        assert all(o.ok for i, o in enumerate(outs) if i != 3)
        accepted = [s.token for s in gateway.seen if s.status == 0]
        assert sorted(accepted) == sorted(t for t in tokens if t != bad)  # each exactly once
        assert {s.connection for s in gateway.seen if s.token == tokens[9]} == {2}
        assert events[0].kind is TokenEventKind.INVALID and events[0].token == bad
    finally:
        client.stop()


def test_a_tiny_cache_still_gives_exact_outcomes(pki, gateway):
    """node-apn lost what fell out of its cache (cacheTooSmall); ours waits for room."""
    client = BinaryClient("127.0.0.1", gateway.gateway_port, context(pki), cache_length=2,
                          cache_wait=5.0, quiet_period=0.3, reconnect_base=0.01)
    bad = "77" * 32
    gateway.reject(bad, 8)
    tokens = [bad] + [f"{i:02x}" * 32 for i in range(1, 8)]
    client.start()
    try:
        outs = [r.get(20) for r in [client.send(Notification(device=t, alert="x"))
                                    for t in tokens]]
        assert outs[0].status is Status.FAILED and outs[0].error == "InvalidToken"
        assert all(o.ok for o in outs[1:])
        accepted = [s.token for s in gateway.seen if s.status == 0]
        assert sorted(accepted) == sorted(tokens[1:])
        assert client.cache.size == 2 and client.counts["cache_waits"] >= 1
    finally:
        client.stop()


def test_payload_limit_and_bad_token_are_named(pki, gateway):
    client = BinaryClient("127.0.0.1", gateway.gateway_port, context(pki))
    out = client.send(Notification(device=TOK, alert="x" * 2100)).get(1)
    assert out.error == "InvalidNotification" and "2048" in out.description
    out = client.send(Notification(device="abc", alert="x")).get(1)
    assert out.error == "InvalidNotification" and "device" in out.description


def test_feedback_poll_and_interval(pki, gateway):
    gateway.add_feedback(TOK, 1_600_000_000)
    gateway.add_feedback("ee" * 32, 1_600_000_100)
    fb = Feedback("127.0.0.1", gateway.feedback_port, context(pki), interval=0)
    assert fb.poll() == [(1_600_000_000, TOK), (1_600_000_100, "ee" * 32)]
    assert fb.poll() == []  # the service forgets what it served
    batches = []
    polled = Feedback("127.0.0.1", gateway.feedback_port, context(pki), callback=batches.append,
                      batch=True, interval=0.05)
    polled.start()
    try:
        gateway.add_feedback("dd" * 32, 1_600_000_200)
        wait_until(lambda: any(b for b in batches), what="a feedback batch")
        assert [(1_600_000_200, "dd" * 32)] in batches
    finally:
        polled.cancel()


def test_shutdown_confirms_up_to_its_identifier(pki, gateway):
    client = BinaryClient("127.0.0.1", gateway.gateway_port, context(pki), quiet_period=30,
                          reconnect_base=0.01)
    client.start()
    try:
        results = [client.send(Notification(device=f"{i:02x}" * 32, alert="x"))
                   for i in range(1, 4)]
        wait_until(lambda: len(gateway.seen) == 3, what="3 frames")
        gateway.shutdown()
        outs = [r.get(10) for r in results]
        assert all(o.ok and o.extra["confirmed"] for o in outs)
        client.send(Notification(device=TOK, alert="after"))
        wait_until(lambda: len(gateway.seen) == 4, what="sent on a new connection")
        assert gateway.seen[-1].connection == 2 and gateway.seen[-1].token == TOK
    finally:
        client.stop(timeout=0.1)
