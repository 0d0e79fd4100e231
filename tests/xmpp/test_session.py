"""One CCS Session against the CCS emulator over real TLS on loopback, told through a listener.

The listener here plays the pool's part: it is told what happened and asks the session back
through its methods (answer, reject), nothing else.
"""

from __future__ import annotations

import json
from typing import Any

import gevent
import pytest
from gevent.queue import Queue

from ccs.xmpp import protocol
from ccs.xmpp.config import CcsConfig
from ccs.xmpp.emulator import CcsEmulator
from ccs.xmpp.session import Session
from ccs.xmpp.stream import GcmReceived, StanzaError
from ccs.xmpp.window import WindowFull

SENDER, KEY = "4815162342", "test-server-key"


class Told:
    """A SessionListener that writes down what it is told, in order, in one queue."""

    def __init__(self) -> None:
        self.events: Queue = Queue()

    def session_ready(self, session: Session[str]) -> None:
        self.events.put(("ready", session.jid))

    def session_gcm(self, session: Session[str], ev: GcmReceived) -> None:
        msg = protocol.classify(ev.json)
        if isinstance(msg, protocol.Ack | protocol.Nack):
            kind = "ack" if isinstance(msg, protocol.Ack) else f"nack {msg.error}"
            self.events.put((kind, session.answer(msg.message_id)))
        elif isinstance(msg, protocol.Upstream):
            self.events.put(("upstream", msg.message_id))
            session.send_ack(protocol.ack_json(msg))
        else:
            self.events.put((type(msg).__name__, None))

    def session_stanza_error(self, session: Session[str], ev: StanzaError) -> None:
        mid = json.loads(ev.json or "{}").get("message_id", "")
        self.events.put(("stanza error " + (ev.condition or ""), session.reject(mid)))

    def session_closed(self, session: Session[str], pending: list[str]) -> None:
        self.events.put(("closed", pending))

    def next(self) -> tuple[str, Any]:
        return self.events.get(timeout=5)


@pytest.fixture
def emu(pki):
    with CcsEmulator(sender_id=SENDER, server_key=KEY, pki=pki, prefixed_fraction=0.5) as e:
        yield e


def start(emu: CcsEmulator, **overrides: Any) -> tuple[Session[str], Told]:
    options: dict[str, Any] = dict(sender_id=SENDER, server_key=KEY, host=emu.host,
                                   port=emu.port, ca_file=emu.ca_file, connect_timeout=5)
    options.update(overrides)
    told = Told()
    session: Session[str] = Session(CcsConfig(**options), told)
    gevent.spawn(session.run)
    return session, told


def downstream(mid: str, to: str = "device-token") -> str:
    return protocol.downstream_json({"to": to, "message_id": mid, "data": {"k": "v"}})


def test_login_is_told_once_and_the_session_is_usable(emu):
    session, told = start(emu)
    kind, jid = told.next()
    assert (kind, jid.split("@")[0]) == ("ready", SENDER)
    assert session.usable and session.state == "ready" and session.lived() > 0
    session.close()
    assert told.next() == ("closed", [])
    assert session.state == "closed" and session.close_reason == "closed by client"
    assert session.retired.is_set()


def test_an_ack_gives_the_item_back_once_and_frees_its_slot(emu):
    session, told = start(emu, window=2)
    assert told.next()[0] == "ready"
    session.send("m1", downstream("m1"), "item-1")
    session.send("m2", downstream("m2"), "item-2")
    assert (session.pending, session.room, session.oldest()) == (2, 0, "item-1")
    with pytest.raises(WindowFull):
        session.send("m3", downstream("m3"), "item-3")
    assert sorted([told.next(), told.next()]) == [("ack", "item-1"), ("ack", "item-2")]
    assert (session.pending, session.room, session.answered, session.sent) == (0, 2, 2, 2)
    assert session.answer("m1") is None and session.answered == 2  # not pending any more
    session.close()


def test_a_nack_is_an_answer_too(emu):
    emu.set_token_error("gone", "DEVICE_UNREGISTERED")
    session, told = start(emu)
    assert told.next()[0] == "ready"
    session.send("m1", downstream("m1", to="gone"), "item-1")
    assert told.next() == ("nack DEVICE_UNREGISTERED", "item-1")
    assert session.answered == 1 and session.pending == 0
    session.close()


def test_a_stanza_error_is_taken_back_by_reject_and_not_counted_as_answered(emu):
    session, told = start(emu)
    assert told.next()[0] == "ready"
    # An ack for nothing the server sent: it answers with a stanza error echoing the JSON.
    session.send("m1", json.dumps({"message_type": "ack", "message_id": "m1", "to": "x"}),
                 "item-1")
    assert told.next() == ("stanza error not-acceptable", "item-1")
    assert session.answered == 0 and session.pending == 0
    session.close()


def test_upstream_is_told_and_acked_by_the_listener(emu):
    session, told = start(emu)
    assert told.next()[0] == "ready"
    mid = emu.send_upstream("device-token", {"hello": "world"})
    assert told.next() == ("upstream", mid)
    emu.wait_for(lambda: mid not in emu.outstanding, what="the ack to reach the emulator")
    session.close()


def test_a_lost_connection_hands_back_every_unanswered_item(emu):
    emu.set_faults(ack_delay=30.0)
    session, told = start(emu)
    assert told.next()[0] == "ready"
    session.send("m1", downstream("m1"), "item-1")
    session.send("m2", downstream("m2"), "item-2")
    emu.wait_for(lambda: len(emu.record.downstream_ids()) == 2, what="both messages to arrive")
    emu.drop()
    kind, pending = told.next()
    assert (kind, sorted(pending)) == ("closed", ["item-1", "item-2"])
    assert session.pending == 0 and session.closed and not session.usable
    assert session.send_ack("{}") is False


def test_refused_login_is_told_as_a_close_with_auth_failed(emu):
    session, told = start(emu, server_key="wrong")
    kind, pending = told.next()
    assert (kind, pending) == ("closed", [])
    assert session.auth_failed and not session.ready.is_set()
    assert "authentication refused" in (session.close_reason or "")


def test_draining_is_the_owners_call_and_retires_the_session(emu):
    session, told = start(emu)
    assert told.next()[0] == "ready"
    emu.drain()
    assert told.next() == ("Control", None)  # told; the session itself does not decide
    assert session.usable and not session.retired.is_set()
    session.mark_draining()
    assert session.state == "draining" and session.retired.is_set() and not session.usable
    assert told.next() == ("closed", [])  # the server closes a drained, idle connection
