"""FcmClient over HTTP/2 against the emulator on real sockets: HTTP/2 by default, HTTP/1.1 when
the server offers no h2, and what the server may do to streams in flight (GOAWAY with streams
open, a lowered stream limit, REFUSED_STREAM): every message ends exactly once, none re-sent
after an answer."""

import logging
from collections import Counter

import pytest

from ccs.outcome import Status
from http_fallback.fcm import Message
from http_fallback.fcm.emulator import FcmEmulator
from tests.fcm_helpers import client_for, sends
from tests.helpers import run_ccs, wait_until


def _send_all(client, tokens):
    results = [client.send(Message(token=t, data={"t": t})) for t in tokens]
    return [r.get(60) for r in results]


def _answered_once(emu, tokens):
    """Every token got exactly one 200 from the emulator, and no other answer."""
    answered = Counter(s.target for s in sends(emu) if s.status == 200)
    assert answered == Counter(tokens)
    assert all(s.status == 200 for s in sends(emu))


def test_http2_is_the_default_on_a_few_connections(pki):
    with FcmEmulator(pki, "p2", latency=0.05) as emu:
        client = client_for(emu, pki, connections=2)
        tokens = [f"d{i}" for i in range(600)]
        outcomes = _send_all(client, tokens)
        stats = client.stats()
        client.stop()
    assert all(o.ok and o.attempts == 1 for o in outcomes)
    assert stats["protocol"] == "h2"
    assert stats["connections"] and {c["protocol"] for c in stats["connections"]} == {"h2"}
    assert {s.protocol for s in sends(emu)} == {"h2"}
    # two connections carried everything (a third was the ALPN probe, which sent nothing)
    assert len({s.connection for s in sends(emu)}) <= 2 and emu.h2_connections <= 3
    assert emu.max_active <= 100 and emu.limit_violations == 0
    _answered_once(emu, tokens)


def test_http11_when_the_server_offers_no_h2_and_it_is_logged(pki, caplog):
    caplog.set_level(logging.INFO, logger="http_fallback.fcm")
    with FcmEmulator(pki, "p1", http2=False) as emu:
        client = client_for(emu, pki, concurrency=4)
        outcomes = _send_all(client, [f"f{i}" for i in range(40)])
        stats = client.stats()
        client.stop()
    assert all(o.ok for o in outcomes)
    assert stats["protocol"] == "http/1.1"
    assert {c["protocol"] for c in stats["connections"]} == {"http/1.1"}
    assert {s.protocol for s in sends(emu)} == {"http/1.1"}
    assert "does not offer HTTP/2" in caplog.text


def test_http2_can_be_turned_off(pki):
    with FcmEmulator(pki, "p1") as emu:
        client = client_for(emu, pki, http2=False)
        assert client.send(Message(token="x")).get(10).ok
        assert client.stats()["protocol"] == "http/1.1"
        client.stop()
    assert emu.h2_connections == 0


def test_goaway_with_streams_open_loses_and_duplicates_nothing(pki):
    with FcmEmulator(pki, "pg", latency=0.2) as emu:
        client = client_for(emu, pki, connections=1)
        tokens = [f"g{i}" for i in range(300)]
        results = [client.send(Message(token=t)) for t in tokens]
        wait_until(lambda: sum(len(s.open) for s in emu.sessions) >= 100, what="streams open")
        (session,) = emu.sessions
        last = sorted(session.open)[40]
        emu.goaway(last_stream_id=last)  # the rest of the open streams were never processed
        outcomes = [r.get(60) for r in results]
        client.stop()
    assert [o.status for o in outcomes] == [Status.OK] * 300
    assert emu.goaways_sent == 1 and emu.h2_connections >= 2
    _answered_once(emu, tokens)


def test_goaway_after_every_few_requests(pki):
    with FcmEmulator(pki, "pg", latency=0.02, goaway_after=150) as emu:
        client = client_for(emu, pki, connections=2)
        tokens = [f"n{i}" for i in range(1500)]
        outcomes = _send_all(client, tokens)
        client.stop()
    assert all(o.ok for o in outcomes)
    assert emu.goaways_sent >= 9
    _answered_once(emu, tokens)


def test_goaway_closing_at_once_leaves_the_processed_unknown_and_resends_the_rest(pki):
    with FcmEmulator(pki, "pu", latency=0.3) as emu:
        client = client_for(emu, pki, connections=1)
        tokens = [f"u{i}" for i in range(50)]
        results = [client.send(Message(token=t)) for t in tokens]
        wait_until(lambda: sum(len(s.open) for s in emu.sessions) == 50, what="streams open")
        (session,) = emu.sessions
        last = sorted(session.open)[9]
        emu.goaway(last_stream_id=last, answer_open=False, reason='{"reason": "shedding"}')
        outcomes = {o.to: o for o in (r.get(60) for r in results)}
        client.stop()
    unknown = sorted(t for t, o in outcomes.items() if o.status is Status.UNKNOWN)
    assert unknown == sorted(tokens[:10])  # at or below last_stream_id: may have been processed
    assert all(outcomes[t].ok for t in tokens[10:])  # above it: not processed, sent again
    assert all(outcomes[t].error == "NO_ANSWER" for t in unknown)
    _answered_once(emu, tokens[10:])


def test_a_lowered_stream_limit_is_obeyed_and_raising_it_is_used(pki):
    with FcmEmulator(pki, "pl", latency=0.1) as emu:
        client = client_for(emu, pki, connections=1)
        results = [client.send(Message(token=f"l{i}")) for i in range(400)]
        wait_until(lambda: emu.max_active >= 50, what="many streams open")
        emu.set_stream_limit(5)
        wait_until(lambda: sum(r.ready() for r in results) >= 200, what="half answered")
        emu.max_active = 0
        emu.set_stream_limit(100)
        outcomes = [r.get(60) for r in results]
        client.stop()
    assert all(o.ok for o in outcomes)
    assert emu.limit_violations == 0
    _answered_once(emu, [f"l{i}" for i in range(400)])


def test_refused_streams_go_out_again_without_counting_as_tries(pki):
    with FcmEmulator(pki, "pr") as emu:
        client = client_for(emu, pki, connections=1)
        assert client.send(Message(token="warm")).get(10).ok
        emu.refuse_next(30)
        tokens = [f"r{i}" for i in range(100)]
        outcomes = _send_all(client, tokens)
        client.stop()
    assert emu.refused == 30
    assert all(o.ok and o.attempts == 1 for o in outcomes)
    _answered_once(emu, ["warm", *tokens])


@pytest.mark.parametrize("http2", [True, False], ids=["h2", "http1.1"])
def test_error_classes_on_either_protocol(pki, http2):
    with FcmEmulator(pki, "pe") as emu:
        emu.fail("gone", "unregistered")
        emu.fail("busy", "unavailable", times=1, retry_after=0)
        emu.fail("hot", "quota", times=1, retry_after=0)
        emu.fail("apns", "third_party_auth")
        emu.fail("stale", "unauthenticated", times=1)
        client = client_for(emu, pki, http2=http2)
        outcomes = {t: client.send(Message(token=t)).get(10)
                    for t in ("ok", "gone", "busy", "hot", "apns", "stale")}
        protocol = client.stats()["protocol"]
        client.stop()
    assert protocol == ("h2" if http2 else "http/1.1")
    assert {t: (str(o.status), o.error, o.attempts) for t, o in outcomes.items()} == {
        "ok": ("ok", None, 1), "gone": ("failed", "UNREGISTERED", 1),
        "busy": ("ok", None, 2), "hot": ("ok", None, 2),
        "apns": ("failed", "THIRD_PARTY_AUTH_ERROR", 1), "stale": ("ok", None, 2)}
    assert emu.tokens_issued == 2  # one refresh for the 401, shared by every connection
    assert len(sends(emu, "gone")) == 1 and len(sends(emu, "apns")) == 1


def test_ccs_send_20000_tokens_at_50ms_all_ok_on_http2(pki, tmp_path):
    count = 20_000
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"tok-{i}\n" for i in range(count)))
    with FcmEmulator(pki, "p20k", latency=0.05, record_limit=count + 10) as emu:
        env = {"CCS_FCM_CREDENTIALS": emu.credentials_file, "CCS_FCM_URL": emu.url,
               "CCS_CA_FILE": pki.ca_file}
        res = run_ccs(["send", "--via", "http", "--tokens-file", str(tokens)], env=env,
                      timeout=300)
        seen = sends(emu)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert len(lines) == count
    not_ok = [x for x in lines if x.split()[0] != "ok"]
    assert not_ok == []
    assert [x.split()[1] for x in lines] == [f"tok-{i}" for i in range(count)]
    assert {s.protocol for s in seen} == {"h2"} and len(seen) == count


def test_stop_with_hundreds_in_flight_says_unknown_only_for_what_went_out(pki):
    with FcmEmulator(pki, "ps", latency=2.0) as emu:
        client = client_for(emu, pki, connections=1)
        results = [client.send(Message(token=f"s{i}")) for i in range(400)]
        wait_until(lambda: sum(s.received for s in emu.sessions) >= 100, what="100 on the wire")
        received = sum(s.received for s in emu.sessions)
        client.stop(timeout=0)
        outcomes = [r.get(5) for r in results]
    kinds = Counter((str(o.status), o.error) for o in outcomes)
    assert set(kinds) <= {("unknown", "NO_ANSWER"), ("failed", "STOPPED")}
    # unknown: exactly the requests the server had received; the rest never left
    assert kinds[("unknown", "NO_ANSWER")] == received
    assert all(o.retryable for o in outcomes if o.error == "STOPPED")
