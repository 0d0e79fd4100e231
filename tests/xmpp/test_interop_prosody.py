"""Our CCS client's XMPP layer against Prosody, an XMPP server we did not write, over real TLS.

The CCS emulator and the client were both written from the same notes, so a misreading they
share would pass every emulator test; here Prosody judges the stream header, SASL PLAIN, the
stream restart, bind, session and XEP-0199 pings, and slixmpp (a second independent client)
receives the gcm stanzas. Where Prosody is not CCS the test says so:

- SASL PLAIN authcid is the bare username (CcsConfig.authcid), not `<sender_id>@<domain>`.
- Nobody acks a gcm message: the JSON is routed as an ordinary XMPP message. A stanza with no
  `to` (what CCS gets) goes to the sender's own bare JID (RFC 6120 10.3.1); with no available
  resource there Prosody bounces a `service-unavailable` error WITHOUT the payload, so unlike a
  CCS stanza error it names no message_id and the message stays unanswered.
- Stopping Prosody sends a `system-shutdown` stream error; CCS announces CONNECTION_DRAINING.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from gevent import socket

from ccs.outcome import Status
from ccs.testing import pki as test_pki
from ccs.transport.tls import client_context
from ccs.xmpp import protocol
from ccs.xmpp.client import CcsClient, CcsConfig
from ccs.xmpp.message import build_message, validate_downstream
from ccs.xmpp.stream import Event, Ready, StanzaError, XmppStream
from tests.helpers import wait_until
from tests.prosody import DOMAIN, Prosody, SlixPeer, require_prosody

SENDER, SENDER_PW = "sender", "s3cret-key"
PEER, PEER_PW = "peer", "peer-pw"
# Everything XML must escape, JSON escapes, and text outside ASCII and the BMP.
TRICKY = {"xml": "<gcm>&amp; </message> ]]> '\"", "json": "\\\"/\n\t\u0001",
          "text": "Größe ✓ 😀 日本"}


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory, pki: test_pki.TestPKI) -> Iterator[Prosody]:
    require_prosody()
    server = Prosody(tmp_path_factory.mktemp("prosody"), pki)
    server.register(SENDER, SENDER_PW)
    server.register(PEER, PEER_PW)
    server.start()
    yield server
    server.stop()


def make_client(server: Prosody, **kw: Any) -> CcsClient:
    cfg: dict[str, Any] = dict(
        sender_id=SENDER, server_key=SENDER_PW, authcid=SENDER, host=server.host,
        port=server.port, domain=DOMAIN, ca_file=server.pki.ca_file, connections=1,
        reconnect_initial=0.05, reconnect_max=0.4, connect_timeout=5.0)
    cfg.update(kw)
    return CcsClient(CcsConfig(**cfg))


@pytest.fixture
def clients() -> Iterator[Callable[..., CcsClient]]:
    made: list[CcsClient] = []

    def start(server: Prosody, **kw: Any) -> CcsClient:
        client = make_client(server, **kw)
        made.append(client)
        client.start()
        return client

    yield start
    for client in made:
        client.stop(0.2)


def stanzas(log: str, direction: str, name: str, **attrs: str) -> list[str]:
    """Prosody's debug log lines for stanzas it received or sent with these attributes (their
    order in the log varies between runs)."""
    head = f"{direction}[c2s]: <{name} "
    want = [f"{k}='{v}'" for k, v in attrs.items()]
    return [line for line in log.splitlines()
            if head in line and all(w in line for w in want)]


def only_session(client: CcsClient) -> dict[str, Any]:
    sessions = client.stats()["sessions"]
    assert len(sessions) == 1, sessions
    return sessions[0]


def test_login_binds_our_resource_and_the_jid_is_what_prosody_bound(prosody, clients):
    client = clients(prosody, resource_prefix="interop")
    assert client.wait_ready(10)
    session = only_session(client)
    jid = session["jid"]
    assert jid == f"{SENDER}@{DOMAIN}/interop-{session['id']}"
    log = prosody.log()
    assert f"Authenticated as {SENDER}@{DOMAIN}" in log
    assert f"Resource bound: {jid}" in log
    assert stanzas(log, "Sending", "iq", id="sess1", type="result")  # 0.12 offers session
    # Prosody routes an iq to that full JID, and our stream answers it: the binding is real.
    peer = SlixPeer(prosody, PEER, PEER_PW).start()
    try:
        reply = peer.ping(jid)
        assert reply["type"] == "result" and str(reply["from"]) == jid
    finally:
        peer.stop()


def test_idle_pings_are_answered_and_the_session_stays_up(prosody, clients):
    client = clients(prosody, ping_interval=0.2, ping_timeout=1.0)
    assert client.wait_ready(10)
    first = only_session(client)
    start = len(prosody.log())

    def pongs() -> int:
        new = prosody.log()[start:]
        return sum(bool(stanzas(new, "Sending", "iq", id=f"ping{n}", to=first["jid"],
                                type="result")) for n in range(1, 20))

    wait_until(lambda: pongs() >= 3, 10, "three pings answered by Prosody")
    # An unanswered ping would have closed the session (ping_timeout): it is the same one.
    assert only_session(client)["id"] == first["id"] and client.healthy()
    stats = client.stats()
    assert stats["reconnects"] == 0 and stats["auth_failures"] == 0


@pytest.mark.parametrize("wrong", [
    {"server_key": "wrong"},
    {"authcid": None},  # the CCS form sender@localhost: Prosody wants the bare username
])
def test_refused_login_is_an_auth_failure_in_stats(prosody, clients, wrong):
    start = len(prosody.log())
    client = clients(prosody, **wrong)
    wait_until(lambda: client.stats()["auth_failures"] >= 2, 10, "two refused logins")
    assert not client.healthy() and not client.wait_ready(0)
    assert client.stats()["reconnects"] >= 1  # it keeps trying, with backoff, without crashing
    refusals = prosody.log()[start:].count(
        "Sending[c2s_unauthed]: <failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>")
    assert refusals >= client.stats()["auth_failures"] >= 2


def test_gcm_json_reaches_slixmpp_intact(prosody, clients):
    """The client's own stanza (no `to`, as for CCS) goes to the sender account's bare JID;
    slixmpp logged in to that account with presence receives it byte for byte."""
    peer = SlixPeer(prosody, SENDER, SENDER_PW, resource="listener").start()
    try:
        client = clients(prosody)
        assert client.wait_ready(10)
        message = build_message("device-token", data=TRICKY, message_id="m-1")
        expected = protocol.downstream_json(validate_downstream(message))
        result = client.send(message)
        wait_until(lambda: peer.gcm, 10, "the gcm stanza at slixmpp")
        assert peer.gcm == [expected]
        assert json.loads(peer.gcm[0])["data"] == TRICKY
        # Prosody does not ack: the message is unanswered until the client stops.
        assert not result.ready() and client.stats()["in_flight"] == 1
        client.stop(0.2)
        assert result.get(1).status is Status.UNKNOWN
    finally:
        peer.stop()


def test_with_no_available_resource_prosody_bounces_without_the_payload(prosody, clients):
    client = clients(prosody)
    assert client.wait_ready(10)
    result = client.send(build_message("device-token", data={"k": "v"}, message_id="m-2"))
    wait_until(lambda: client.stats()["stanza_errors"] == 1, 10, "Prosody's bounce")
    # No echoed JSON, so no message_id to match: not failed, not retried, still in flight.
    stats = client.stats()
    assert stats["in_flight"] == 1 and stats["failed"] == stats["retried"] == 0
    assert not result.ready() and client.healthy()


class RawStream:
    """Our sans-I/O XmppStream driven straight over a TLS socket (no pool, no session)."""

    def __init__(self, server: Prosody, user: str, password: str) -> None:
        self.stream = XmppStream(DOMAIN, user, password, "raw")
        raw = socket.create_connection((server.host, server.port), timeout=5)
        self.sock = client_context(server.pki.ca_file).wrap_socket(raw, server_hostname=DOMAIN)
        self.events: list[Event] = []

    def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        with gevent.Timeout(timeout):
            while not done():
                self.sock.sendall(self.stream.data_to_send())
                if done():
                    break
                data = self.sock.recv(65536)
                assert data, "Prosody closed the connection"
                self.events.extend(self.stream.receive(data))

    def close(self) -> None:
        self.stream.close()
        self.sock.sendall(self.stream.data_to_send())
        self.sock.close()


def test_gcm_addressed_to_a_second_user_reaches_slixmpp(prosody):
    """With a stanza `to` (not used for CCS) our encoder's output is routed to another account;
    to an unknown account Prosody bounces service-unavailable, again without the payload."""
    peer = SlixPeer(prosody, PEER, PEER_PW).start()
    ours = RawStream(prosody, SENDER, SENDER_PW)
    try:
        ours.until(lambda: any(isinstance(e, Ready) for e in ours.events))
        text = json.dumps({"to": "x", "message_id": "m-3", "data": TRICKY}, ensure_ascii=False)
        ours.stream.send_gcm(text, to=f"{PEER}@{DOMAIN}")
        ours.stream.send_gcm(text, to=f"nobody@{DOMAIN}")
        ours.until(lambda: any(isinstance(e, StanzaError) for e in ours.events))
        wait_until(lambda: peer.gcm, 10, "the gcm stanza at slixmpp")
        assert peer.gcm == [text]
        bounce = next(e for e in ours.events if isinstance(e, StanzaError))
        assert bounce.condition == "service-unavailable" and bounce.json is None
    finally:
        ours.close()
        peer.stop()


def test_prosody_stopping_is_noticed_and_the_client_reconnects_with_backoff(
        tmp_path, pki, clients):
    require_prosody()
    server = Prosody(tmp_path, pki)
    server.register(SENDER, SENDER_PW)
    server.start()
    try:
        client = clients(server, ping_interval=30.0)  # noticing must not wait for a ping
        assert client.wait_ready(10)
        before = only_session(client)
        changes: list[float] = []  # when each reconnect was counted

        def watch() -> None:
            while len(changes) < 4:
                n = client.stats()["reconnects"]
                changes.extend([time.monotonic()] * (n - len(changes)))
                gevent.sleep(0.002)

        watcher = gevent.spawn(watch)
        server.stop()
        wait_until(lambda: not client.healthy(), 5, "the client to notice")
        assert "system-shutdown" in server.log()
        watcher.join(10)
        watcher.kill()
        assert len(changes) >= 4, changes
        gaps = [b - a for a, b in zip(changes, changes[1:4], strict=False)]
        # 0.05 s doubling with jitter in [0.5, 1]: the third wait is at least the first's double
        assert gaps[2] > gaps[0] > 0, gaps
        server.start()  # same port
        assert client.wait_ready(10)
        after = only_session(client)
        assert after["id"] != before["id"] and after["jid"].startswith(f"{SENDER}@{DOMAIN}/")
    finally:
        server.stop()
