"""FastH2Connection's cheap stream counting keeps h2's limit exact (no network: two in-memory
h2 peers hand bytes to each other)."""

import pytest
from h2.config import H2Configuration
from h2.exceptions import TooManyStreamsError
from h2.settings import SettingCodes, Settings
from hypothesis import given, settings
from hypothesis import strategies as st

from http_fallback.transport.h2conn import FastH2Connection, client_config

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
