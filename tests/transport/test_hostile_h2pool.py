"""The APNs client on the shared HTTP/2 pool against tests/hostile_h2.py: each unkind
behaviour alone, then all together. Counted: one outcome per notification, nothing lost,
nothing sent again after a final answer, no stream over the acknowledged limit, no churn."""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter

import pytest
from gevent.event import Event

from ccs.outcome import Status
from http_fallback.apns.client import ApnsClient
from http_fallback.apns.config import ApnsConfig
from http_fallback.apns.model import Notification
from tests.apns_support import KEY_ID, KEY_PEM, TEAM_ID, TOPIC, token
from tests.greenlet_errors import no_greenlet_errors  # noqa: F401 - autouse fixture
from tests.helpers import run_ccs
from tests.hostile_h2 import ALL, Behaviour, HostileApns, verdict

SCENARIOS = {
    "limit-drops-to-1": Behaviour(drop_to_one=True, refusals=True),
    # the first answers wait for 1000 open streams: ~700 are above the GOAWAY's last id
    "goaway-with-streams-open": Behaviour(goaway_after=300, hold=1000),
    "1-KiB-windows": Behaviour(window=1024),
    "2-ms-latency": Behaviour(latency=0.002),
    "refusals": Behaviour(refusals=True, error_pad=700),
    "all-together": ALL,
}


def config(server: HostileApns, pki, **kw) -> ApnsConfig:
    base = dict(host="127.0.0.1", port=server.port, ca_file=pki.ca_file, topic=TOPIC,
                connections=2, request_timeout=60.0, backoff_base=0.05, backoff_cap=0.2,
                reconnect_base=0.05, key_data=KEY_PEM, key_id=KEY_ID, team_id=TEAM_ID,
                goaway_grace=5.0)
    base.update(kw)
    return ApnsConfig(**base)


def note(n: int) -> Notification:
    pad = {"pad": "p" * 2500} if n % 3 == 0 else {}  # past a 1 KiB window: sent in pieces
    return Notification(device=token(n), alert=f"n{n}", payload=pad)


def send_all(client: ApnsClient, count: int) -> list:
    """Send `count` notifications at once; return each outcome (and check each comes once)."""
    done, seen = Event(), Counter()
    results = [client.send(note(n)) for n in range(count)]
    for i, r in enumerate(results):
        r.add_callback(lambda _o, i=i: (seen.update([i]), len(seen) == count and done.set()))
    assert done.wait(90), f"{count - len(seen)} notifications without an outcome"
    assert max(seen.values()) == 1
    return [r.get() for r in results]


def check(outcomes: list, server: HostileApns, client: ApnsClient, retries: int) -> None:
    for n, out in enumerate(outcomes):
        status, reason = verdict(token(n)) if server.b.refusals else (200, None)
        if status == 200:
            assert out.status is Status.OK, (n, out)
        else:
            assert (out.status, out.error) == (Status.FAILED, reason), (n, out)
    stats = client.stats()
    assert stats["ok"] + stats["failed"] + stats["unknown"] == len(outcomes)  # one finish each
    assert stats["unknown"] == 0  # the server answered or refused every stream it kept
    assert server.violations == 0 and not server.protocol_errors
    assert server.resent_after_final == 0 and server.missing_auth == 0
    # answered exactly 1 + retries times for 429/500/503, once for the rest
    for n, out in enumerate(outcomes):
        status = verdict(token(n))[0] if server.b.refusals else 200
        answers = server.by_id[out.message_id]
        assert len(answers) == (1 + retries if status in (429, 500, 503) else 1), (n, answers)
    # no churn: a new connection only for each GOAWAY, and none closed by us with work left
    assert server.connections <= client.config.connections + server.goaways
    assert server.client_closes == 0


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_notification_has_one_outcome(pki, name):
    behaviour = SCENARIOS[name]
    count = 1500
    with HostileApns(pki, behaviour) as server:
        conns = 1 if name == "goaway-with-streams-open" else 2  # all streams on one
        with ApnsClient(config(server, pki, retries=2, connections=conns)) as client:
            limits = []
            client.events.limit_changed.add(lambda e: limits.append(e.limit))
            outcomes = send_all(client, count)
            check(outcomes, server, client, retries=2)
            if behaviour.goaway_after:  # streams open above last_stream_id went out again
                above = sum(n for _, n in server.goaway_open)
                assert server.goaways >= 1 and client.stats()["requeued"] >= above
                if behaviour is SCENARIOS["goaway-with-streams-open"]:
                    assert max(above for _, above in server.goaway_open) >= 500
            if behaviour.drop_to_one:  # followed down to 1 and back up, many times
                assert limits.count(1) > 10 and limits.count(behaviour.streams) > 10


def test_goaway_streams_kept_but_never_answered_end_unknown_after_the_grace(pki):
    behaviour = dataclasses.replace(Behaviour(), goaway_after=50, goaway_silent=True,
                                    latency=0.002)
    with HostileApns(pki, behaviour) as server:
        with ApnsClient(config(server, pki, connections=1, goaway_grace=0.5)) as client:
            order = []
            client.events.connected.add(lambda e: order.append(("up", e.serial)))
            client.events.disconnected.add(lambda e: order.append(("down", e.serial)))
            outcomes = send_all(client, 400)
            # the slot's next connection opened while the GOAWAY'd one waited out its grace
            assert order.index(("up", 2)) < order.index(("down", 1)), order
            kept = [o for o in outcomes if o.status is Status.UNKNOWN]
            assert all(o.status in (Status.OK, Status.UNKNOWN) for o in outcomes)
            # answered before the GOAWAY: ok; kept by it and never answered: unknown after
            # the grace; above it: sent again on the next connection and ok
            assert kept and all(o.error == "Shutdown" for o in kept)
            assert server.answers[200] == len(outcomes) - len(kept)
            assert server.resent_after_final == 0 and server.violations == 0
            assert server.goaways >= 1 and server.connections <= 1 + server.goaways


def test_ccs_send_1500_tokens_against_everything_at_once(pki, tmp_path):
    """The issue's run by hand: `ccs send --apns-tokens-file`, token auth, every unkind
    behaviour at once. It ends with exit status 1 and one line per token, in input order."""
    count = 1500
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(token(n) + "\n" for n in range(count)))
    key = tmp_path / "AuthKey.p8"
    key.write_bytes(KEY_PEM)
    with HostileApns(pki, ALL) as server:
        env = {"CCS_APNS_HOST": "127.0.0.1", "CCS_APNS_PORT": str(server.port),
               "CCS_CA_FILE": pki.ca_file, "CCS_APNS_KEY_FILE": str(key),
               "CCS_APNS_KEY_ID": KEY_ID, "CCS_APNS_TEAM_ID": TEAM_ID, "CCS_APNS_TOPIC": TOPIC}
        started = time.monotonic()
        proc = run_ccs(["send", "--apns-tokens-file", str(tokens), "--alert", "hi", "--json"],
                       env=env, timeout=180)  # a hang guard, not a timing goal
        elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["to"] for line in lines] == [token(n) for n in range(count)]
    retries = ApnsConfig.retries  # the default budget: CCS_APNS_RETRY_ATTEMPTS
    for n, line in enumerate(lines):
        status, reason = verdict(token(n))
        if status == 200:
            assert line["status"] == "ok", (n, line)
        else:
            assert (line["status"], line["error"]) == ("failed", reason), (n, line)
            if status in (429, 500, 503):
                assert len(server.by_id[line["message_id"]]) == 1 + retries, (n, line)
    assert server.violations == 0, server.violation_log[:20]
    assert server.resent_after_final == 0
    assert not server.protocol_errors and server.goaways >= 1
    assert server.connections <= 2 + server.goaways
    print(f"ccs send: {count} lines in {elapsed:.1f} s, {server.connections} connections, "
          f"{server.goaways} GOAWAYs")
