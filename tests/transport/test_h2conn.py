"""FastH2Connection's cheap stream counting keeps h2's limit exact (no network: two in-memory
h2 peers hand bytes to each other)."""

import pytest
from h2.config import H2Configuration
from h2.exceptions import TooManyStreamsError
from h2.settings import SettingCodes, Settings
from hypothesis import given, settings
from hypothesis import strategies as st

from ccs.transport.h2conn import FastH2Connection, client_config

HEADERS = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"x"),
           (b":path", b"/")]


def pair(limit):
    client = FastH2Connection(client_config(), huffman=False)
    server = FastH2Connection(H2Configuration(client_side=False, header_encoding=None))
    server.local_settings = Settings(client=False, initial_values={
        SettingCodes.MAX_CONCURRENT_STREAMS: limit})
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def answer(client, server, sids):
    for sid in sids:
        server.send_headers(sid, [(b":status", b"200")], end_stream=True)
    client.receive_data(server.data_to_send())


@given(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=40))
@settings(max_examples=30, deadline=None)
def test_limit_is_exact_through_opens_and_closes(answers):
    client, server = pair(limit=10)
    open_ids: list[int] = []
    for n in answers:
        # open until h2 refuses: the refusal must come exactly at the limit
        while True:
            sid = client.get_next_available_stream_id()
            try:
                client.send_headers(sid, HEADERS, end_stream=True)
            except TooManyStreamsError:
                break
            open_ids.append(sid)
        assert len(open_ids) == 10
        server.receive_data(client.data_to_send())
        done, open_ids = open_ids[:n], open_ids[n:]
        answer(client, server, done)


def test_plain_encoder_is_valid_hpack():
    client, server = pair(limit=5)
    client.send_headers(1, HEADERS + [(b"x-emoji", "😀".encode())], end_stream=True)
    events = server.receive_data(client.data_to_send())
    assert dict(events[0].headers)[b"x-emoji"] == "😀".encode()


def test_server_refuses_above_its_limit():
    client, server = pair(limit=2)
    client.remote_settings = Settings(client=True, initial_values={
        SettingCodes.MAX_CONCURRENT_STREAMS: 100})  # a client ignoring the limit
    for sid in (1, 3, 5):
        client.send_headers(sid, HEADERS, end_stream=True)
    with pytest.raises(TooManyStreamsError):
        server.receive_data(client.data_to_send())


def test_literal_encoder_round_trips_and_leaves_the_table_empty():
    from hpack import Decoder, NeverIndexedHeaderTuple

    from ccs.transport.h2conn import LiteralEncoder

    enc, dec = LiteralEncoder(), Decoder()
    block = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"api.example"),
             NeverIndexedHeaderTuple(b":path", b"/3/device/ab"),
             NeverIndexedHeaderTuple(b"authorization", b"bearer x" * 40),
             (b"apns-topic", "bündel".encode()), (b"x-custom-name", b"v" * 300)]
    for _ in range(3):  # the second and third come from the cache, byte for byte the same
        first = enc.encode(block)
        assert dec.decode(first, raw=True) == [tuple(h) for h in block]
        assert enc.encode(block) == first
    assert len(dec.header_table.dynamic_entries) == 0  # nothing was ever indexed
    never = [h for h in Decoder().decode(first, raw=True) if not h.indexable]
    assert [h[0] for h in never] == [b":path", b"authorization"]
    # equal tuples, different flags: the cache keeps them apart, in either order
    for pair_ in ([(b"x-a", b"1"), NeverIndexedHeaderTuple(b"x-a", b"1")],
                  [NeverIndexedHeaderTuple(b"x-b", b"2"), (b"x-b", b"2")]):
        for h in pair_:
            (got,) = Decoder().decode(enc.encode([h]), raw=True)
            assert got.indexable is (type(h) is tuple)
    enc.header_table_size = 0  # a peer's SETTINGS_HEADER_TABLE_SIZE is still announced
    assert enc.encode([(b":method", b"POST")]) == b"\x20\x83"


def test_send_all_tells_nothing_written_from_a_failure_part_way():
    import socket

    from ccs.transport.h2conn import NothingWritten, _send_all

    a, b = socket.socketpair()
    try:
        _send_all(a, b"preface")
        assert b.recv(16) == b"preface"
    finally:
        a.close()
        b.close()
    with pytest.raises(NothingWritten):  # closed before a byte went: the peer saw nothing
        _send_all(a, b"HEADERS")


def test_client_refuses_server_push():
    client, server = pair(limit=5)
    assert server.remote_settings.enable_push == 0  # a push now is a protocol error
