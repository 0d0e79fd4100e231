"""FcmClient over HTTP/2 against tests/hostile_fcm.py: each unkind behaviour alone, then all
together. Counted: one outcome per message, nothing lost, nothing sent again after a final
answer, no stream over the acknowledged limit, no connection churn."""

from __future__ import annotations

from collections import Counter

import pytest
from gevent.event import Event

from ccs.outcome import Status
from http_fallback.fcm import Message
from http_fallback.fcm.emulator import FcmEmulator
from tests.apns_support import token
from tests.fcm_helpers import client_for
from tests.greenlet_errors import no_greenlet_errors  # noqa: F401 - autouse fixture
from tests.hostile_fcm import HostileFcm, fcm_verdict
from tests.hostile_h2 import ALL, Behaviour

SCENARIOS = {
    "limit-drops-to-1": Behaviour(streams=100, drop_to_one=True, refusals=True),
    # the first answers wait for 250 open streams, most of them above the GOAWAY's last id
    "goaway-with-streams-open": Behaviour(streams=1000, goaway_after=100, goaway_last=99,
                                          hold=250),
    "1-KiB-windows": Behaviour(streams=100, window=1024),
    "2-ms-latency": Behaviour(streams=100, latency=0.002),
    "refusals": Behaviour(streams=100, refusals=True, error_pad=700),
    "all-together": ALL,
}
ATTEMPTS = 3


def send_all(client, count: int) -> list:
    done, seen = Event(), Counter()
    # some bodies past a 1 KiB window: they go out in pieces as the server opens it
    results = [client.send(Message(token=token(n), data={"n": "x" * (n % 7) * 300}))
               for n in range(count)]
    for i, r in enumerate(results):
        r.add_callback(lambda _o, i=i: (seen.update([i]), len(seen) == count and done.set()))
    assert done.wait(90), f"{count - len(seen)} messages without an outcome"
    assert max(seen.values()) == 1
    return [r.get() for r in results]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_message_has_one_outcome(pki, name):
    behaviour = SCENARIOS[name]
    count = 1500
    with FcmEmulator(pki, "hostile") as auth, HostileFcm(pki, behaviour) as server:
        connections = 1 if name == "goaway-with-streams-open" else 2
        client = client_for(auth, pki, base_url=f"https://127.0.0.1:{server.port}",
                            connections=connections, max_attempts=ATTEMPTS)
        outcomes = send_all(client, count)
        stats = client.stats()
        client.stop()
    for n, out in enumerate(outcomes):
        status, code = fcm_verdict(token(n)) if behaviour.refusals else (200, None)
        if status == 200:
            assert out.status is Status.OK, (n, out)
        else:
            assert (out.status, out.error) == (Status.FAILED, code), (n, out)
        answers = server.by_id[token(n)]
        assert len(answers) == (ATTEMPTS if status in (429, 500, 503) else 1), (n, answers)
    assert stats["ok"] + stats["failed"] == count and stats["unknown"] == 0
    assert stats["protocol"] == "h2"
    assert server.violations == 0 and not server.protocol_errors
    assert server.resent_after_final == 0
    # no churn: one more connection per GOAWAY, the ALPN probe, nothing closed with work left
    assert server.connections <= connections + 1 + server.goaways
    assert server.client_closes <= 1  # the probe, which asked for ALPN and left
    if behaviour.goaway_after:
        assert server.goaways >= 1 and max(above for _, above in server.goaway_open) > 0
    if name == "goaway-with-streams-open":  # most of the 250 open were above its last id
        assert max(above for _, above in server.goaway_open) >= 100
