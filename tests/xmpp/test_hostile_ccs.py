"""CcsClient facing a hostile CCS server over real TLS on loopback: each attack closes (or is
shrugged off by) the affected connection with a logged reason, and every message still ends in
exactly one outcome."""

from __future__ import annotations

import contextlib
import logging
import resource
import time
from xml.sax.saxutils import escape

import pytest
from gevent.server import StreamServer

from ccs.outcome import Status
from ccs.xmpp.client import CcsClient, CcsConfig
from ccs.xmpp.message import build_message
from tests.greenlet_errors import no_greenlet_errors  # noqa: F401 - autouse fixture
from tests.helpers import wait_until
from tests.hostile_ccs import HostileCcs, ack, gcm

SENDER, KEY = "4815162342", "hostile-test-key"


@contextlib.contextmanager
def client_for(server: HostileCcs, pki, **overrides):
    options = dict(sender_id=SENDER, server_key=KEY, host="127.0.0.1", port=server.port,
                   ca_file=pki.ca_file, connections=1, retry_initial=0.02,
                   reconnect_initial=0.02, reconnect_max=0.1, connect_timeout=5)
    options.update(overrides)
    client = CcsClient(CcsConfig(**options))
    client.start()
    try:
        yield client
    finally:
        client.stop(timeout=2)


def send_and_collect(client: CcsClient, count: int = 1, timeout: float = 10):
    """Send `count` messages; return each one's outcomes (every callback call, not just one)."""
    seen: dict[str, list] = {}
    results = []
    for i in range(count):
        msg = build_message(f"tok-{i}", data={"n": str(i)})
        seen[msg["message_id"]] = []
        result = client.send(msg)
        result.add_callback(lambda o, mid=msg["message_id"]: seen[mid].append(o))
        results.append(result)
    outcomes = [r.get(timeout=timeout) for r in results]
    wait_until(lambda: all(seen.values()), timeout=2, what="callbacks")
    assert all(len(v) == 1 for v in seen.values()), seen
    return outcomes


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


LAUGHS = (b"<!DOCTYPE lolz [<!ENTITY lol 'lol'>"
          + b"".join(b"<!ENTITY lol%d '%s'>" % (i, (b"&lol%s;" % (str(i - 1).encode()
                                                                  if i > 1 else b"")) * 10)
                     for i in range(1, 10))
          + b"]><message><gcm xmlns='google:mobile:data'>&lol9;</gcm></message>")


def external_entity(port: int) -> bytes:
    return (b"<!DOCTYPE m [<!ENTITY xxe SYSTEM 'http://127.0.0.1:%d/secret'>]>"
            b"<message><gcm xmlns='google:mobile:data'>&xxe;</gcm></message>" % port)


XML_ATTACKS = {
    "malformed": (lambda link, m: link.send(b"<message><gcm></message>"), "invalid-xml"),
    "billion-laughs": (lambda link, m: link.send(LAUGHS), "restricted-xml"),
    "oversized": (lambda link, m: link.send(
        b"<message><gcm xmlns='google:mobile:data'>" + b"A" * (1200 * 1024)), "too large"),
    "invalid-utf8": (lambda link, m: link.send(
        b"<message><gcm xmlns='google:mobile:data'>\xff\xfe\xc3</gcm></message>"), "invalid-xml"),
    "entity-reference": (lambda link, m: link.send(gcm("x").replace(b"x", b"&undefined;")),
                         "invalid-xml"),
}


@pytest.mark.parametrize("name", list(XML_ATTACKS))
def test_xml_attack_closes_the_connection_and_the_message_is_resent(pki, caplog, name):
    attack, reason = XML_ATTACKS[name]
    caplog.set_level(logging.INFO, logger="ccs")
    rss_before, started = max_rss_mb(), time.monotonic()
    with HostileCcs(pki, attack) as server, client_for(server, pki) as client:
        [outcome] = send_and_collect(client)
        stats = client.stats()
    assert time.monotonic() - started < 10
    assert max_rss_mb() - rss_before < 50  # nothing was expanded into memory
    assert server.attacked.is_set() and server.connections >= 2
    assert outcome.status is Status.OK and outcome.attempts == 2
    assert stats["resent_after_loss"] == 1
    # the same message, sent again on the fresh connection
    assert server.received[0]["message_id"] == server.received[1]["message_id"]
    closing = [r.getMessage() for r in caplog.records if "closing" in r.getMessage()]
    assert any("protocol violation" in m and reason in m for m in closing), closing


def test_external_entity_is_never_fetched(pki, caplog):
    fetched = []
    trap = StreamServer(("127.0.0.1", 0), lambda sock, addr: fetched.append(addr))
    trap.start()
    try:
        with HostileCcs(pki, lambda link, m: link.send(external_entity(trap.server_port))) \
                as server, client_for(server, pki) as client:
            [outcome] = send_and_collect(client)
    finally:
        trap.stop(timeout=1)
    assert outcome.status is Status.OK and outcome.attempts == 2
    assert fetched == []
    assert any("restricted-xml" in r.getMessage() for r in caplog.records)


def test_a_dtd_before_the_stream_header_is_refused(pki, caplog):
    prolog = b"<?xml version='1.0'?>" + LAUGHS.split(b"<message>")[0] + b"<stream:stream>"
    with HostileCcs(pki, attack_prolog=prolog) as server, client_for(server, pki) as client:
        [outcome] = send_and_collect(client)
    assert outcome.status is Status.OK and outcome.attempts == 1  # never sent on the bad one
    assert any("restricted-xml" in r.getMessage() for r in caplog.records)


JSON_ATTACKS = {
    "array": "[1,2,3]",
    "number": "42",
    "huge-number": '{"message_type":"ack","message_id":' + "9" * 5000 + "}",
    "huge-float": '{"message_type":"ack","message_id":"x","from":1e999999}',
    "deep": "[" * 50000,
    "missing-id": '{"message_type":"ack"}',
    "id-not-a-string": '{"message_type":"nack","message_id":["a"],"error":"BAD_ACK"}',
    "not-json": "<<garbage>>",
}


@pytest.mark.parametrize("name", list(JSON_ATTACKS))
def test_json_of_the_wrong_shape_is_logged_and_the_real_ack_still_counts(pki, caplog, name):
    """XMPP framing is intact, so the connection stays: the bad payload is logged and dropped."""
    def attack(link, message):
        link.send(gcm(JSON_ATTACKS[name]) + ack(message))

    caplog.set_level(logging.INFO, logger="ccs")
    with HostileCcs(pki, attack) as server, client_for(server, pki) as client:
        [outcome] = send_and_collect(client)
        stats = client.stats()
    assert outcome.status is Status.OK and outcome.attempts == 1
    assert stats["reconnects"] == 0 and server.connections == 1
    assert any(r.levelno >= logging.WARNING and r.name.startswith("ccs") for r in caplog.records)


@pytest.mark.parametrize("echo", ["[" * 50000, "[1]", '{"message_id":7}', "not json"])
def test_stanza_error_echoing_junk_is_logged_and_the_session_stays(pki, caplog, echo):
    def attack(link, message):
        link.send(b"<message type='error'><gcm xmlns='google:mobile:data'>"
                  + escape(echo).encode() + b"</gcm><error code='400' type='modify'>"
                  b"<bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
                  b"</message>" + ack(message))

    with HostileCcs(pki, attack) as server, client_for(server, pki) as client:
        [outcome] = send_and_collect(client)
        stats = client.stats()
    assert outcome.status is Status.OK and stats["reconnects"] == 0
    assert server.connections == 1
    assert any("stanza error 400 bad-request" in r.getMessage() for r in caplog.records)


def test_ack_for_an_unknown_id_is_counted_and_logged(pki, caplog):
    def attack(link, message):
        link.send(ack({"to": "x", "message_id": "never-sent"}) + ack(message))

    caplog.set_level(logging.INFO, logger="ccs")
    with HostileCcs(pki, attack) as server, client_for(server, pki) as client:
        [outcome] = send_and_collect(client)
        stats = client.stats()
    assert outcome.status is Status.OK
    assert stats["unexpected_acks"] == 1 and server.connections == 1
    assert any("never-sent" in r.getMessage() for r in caplog.records)


def test_many_messages_in_flight_through_a_hostile_close_each_end_once(pki, caplog):
    with HostileCcs(pki, XML_ATTACKS["malformed"][0]) as server, \
            client_for(server, pki) as client:
        outcomes = send_and_collect(client, count=30)
    assert [o.status for o in outcomes] == [Status.OK] * 30
    assert len({o.message_id for o in outcomes}) == 30
