"""The FCM emulator over HTTP/2: ALPN h2 and http/1.1 on one port, answer latency, stream limit,
GOAWAY and REFUSED_STREAM, checked with independent clients (httpx, a bare h2 client)."""

import asyncio
import json
import ssl
import time

import httpx
import pytest
from h2 import events as ev

from ccs.transport.http11 import HttpClient
from http_fallback.fcm.emulator import FcmEmulator
from tests.fcm_helpers import client_for, sends
from tests.h2_raw import RawH2
from tests.helpers import wait_until


def _ctx(pki):
    return ssl.create_default_context(cafile=pki.ca_file)


def _token(emu, pki):
    client = client_for(emu, pki)
    try:
        return client._tokens.get()
    finally:
        client.stop(timeout=1)


@pytest.fixture
def threaded(pki):
    """An emulator serving from its own thread, for blocking clients (httpx)."""
    made = []

    def make(**options):
        emu = FcmEmulator(pki, "proj-h2", **options).start_in_thread()
        emu.create_service_account()
        made.append(emu)
        return emu, _token(emu, pki)

    yield make
    for emu in made:
        emu.stop()


def test_httpx_speaks_http2_and_http11_shares_the_port(threaded, pki):
    emu, token = threaded()
    auth = {"Authorization": f"Bearer {token}"}
    emu.fail("gone", "unregistered")
    emu.fail("busy", "unavailable", times=1, retry_after=3)
    with httpx.Client(http2=True, verify=_ctx(pki)) as h2c:
        ok = h2c.post(emu.send_url, json={"message": {"token": "a"}}, headers=auth)
        gone = h2c.post(emu.send_url, json={"message": {"token": "gone"}}, headers=auth)
        busy = h2c.post(emu.send_url, json={"message": {"token": "busy"}}, headers=auth)
        bad = h2c.post(emu.send_url, json={"message": {"token": "a", "data": {"x": 1}}},
                       headers=auth)
    assert ok.http_version == "HTTP/2" and ok.status_code == 200
    assert ok.json() == {"name": "projects/proj-h2/messages/0:1"}
    assert gone.status_code == 404
    assert gone.json()["error"]["details"][0]["errorCode"] == "UNREGISTERED"
    assert busy.status_code == 503 and busy.headers["retry-after"] == "3"
    assert bad.status_code == 400
    with httpx.Client(http2=False, verify=_ctx(pki)) as h1c:
        plain = h1c.post(emu.send_url, json={"message": {"token": "b"}}, headers=auth)
    assert plain.http_version == "HTTP/1.1" and plain.status_code == 200
    assert [s.protocol for s in sends(emu)] == ["h2"] * 4 + ["http/1.1"]


def test_without_http2_alpn_offers_nothing_and_httpx_falls_back(threaded, pki):
    emu, token = threaded(http2=False)
    with httpx.Client(http2=True, verify=_ctx(pki)) as c:
        r = c.post(emu.send_url, json={"message": {"token": "a"}},
                   headers={"Authorization": f"Bearer {token}"})
    assert r.http_version == "HTTP/1.1" and r.status_code == 200
    assert emu.h2_connections == 0


def test_latency_and_stream_limit_hold_for_many_concurrent_streams(threaded, pki):
    emu, token = threaded(latency=0.1, max_concurrent_streams=20)
    auth = {"Authorization": f"Bearer {token}"}

    async def many():
        async with httpx.AsyncClient(http2=True, verify=_ctx(pki)) as c:
            return await asyncio.gather(*[
                c.post(emu.send_url, json={"message": {"token": f"t{i}"}}, headers=auth)
                for i in range(200)])

    t0 = time.monotonic()
    answers = asyncio.run(many())
    elapsed = time.monotonic() - t0
    assert {r.status_code for r in answers} == {200}
    assert {r.http_version for r in answers} == {"HTTP/2"}
    assert emu.max_active == 20 and emu.limit_violations == 0
    # 200 requests, at most 20 answered per 0.1 s on each connection httpx opened
    assert elapsed >= 0.1 * 200 / 20 / emu.h2_connections
    assert emu.messages_accepted == 200


@pytest.fixture
def emu(pki):
    with FcmEmulator(pki, "proj-h2", latency=0.2) as emulator:
        yield emulator


def _open(emu):
    return sum(len(s.open) for s in list(emu.sessions))


def _raw(emu, pki):
    raw = RawH2(emu.port, pki.ca_file)
    assert raw.alpn == "h2"
    return raw


def test_goaway_answers_streams_at_or_below_and_never_processes_those_above(emu, pki):
    token = _token(emu, pki)
    raw = _raw(emu, pki)
    sids = [raw.post(emu.send_url[len(emu.url):], token, {"token": f"g{i}"}) for i in range(6)]
    wait_until(lambda: _open(emu) == 6, what="six streams open")
    emu.goaway(last_stream_id=sids[2])
    wait_until(lambda: raw.closed, what="the emulator closes after answering")
    (goaway,) = raw.of(ev.ConnectionTerminated)
    assert goaway.last_stream_id == sids[2] and goaway.error_code == 0
    assert raw.answers == {sid: 200 for sid in sids[:3]}
    assert sorted(s.target for s in sends(emu)) == ["g0", "g1", "g2"]
    assert emu.messages_accepted == 3


def test_goaway_without_answers_abandons_open_streams(emu, pki):
    token = _token(emu, pki)
    raw = _raw(emu, pki)
    for i in range(3):
        raw.post(emu.send_url[len(emu.url):], token, {"token": f"a{i}"})
    wait_until(lambda: _open(emu) == 3, what="three streams open")
    emu.goaway(answer_open=False)
    wait_until(lambda: raw.closed, what="closed")
    assert raw.answers == {} and emu.messages_accepted == 0
    assert len(raw.of(ev.ConnectionTerminated)) == 1


def test_goaway_after_n_requests_on_each_connection(pki):
    with FcmEmulator(pki, "proj-h2", latency=0.05, goaway_after=2) as emu:
        token = _token(emu, pki)
        raw = _raw(emu, pki)
        sids = [raw.post(emu.send_url[len(emu.url):], token, {"token": f"n{i}"})
                for i in range(5)]
        wait_until(lambda: raw.closed, what="closed after two answers")
        assert raw.of(ev.ConnectionTerminated)[0].last_stream_id == sids[1]
        assert raw.answers == {sids[0]: 200, sids[1]: 200}
        assert emu.messages_accepted == 2


def test_refused_streams_are_reset_unprocessed(emu, pki):
    token = _token(emu, pki)
    raw = _raw(emu, pki)
    emu.refuse_next(2)
    sids = [raw.post(emu.send_url[len(emu.url):], token, {"token": f"r{i}"}) for i in range(3)]
    wait_until(lambda: sids[2] in raw.answers, what="the third answered")
    resets = {e.stream_id: e.error_code for e in raw.of(ev.StreamReset)}
    assert resets == {sids[0]: 7, sids[1]: 7}  # REFUSED_STREAM
    assert emu.refused == 2 and [s.target for s in sends(emu)] == ["r2"]
    raw.close()


def test_stream_limit_changes_mid_flight_and_binds_once_acknowledged(emu, pki):
    token = _token(emu, pki)
    raw = _raw(emu, pki)
    wait_until(lambda: raw.conn.remote_settings.max_concurrent_streams == 100, what="settings")
    path = emu.send_url[len(emu.url):]
    for i in range(5):
        raw.post(path, token, {"token": f"l{i}"})
    emu.set_stream_limit(3)
    wait_until(lambda: raw.conn.remote_settings.max_concurrent_streams == 3, what="new limit")
    wait_until(lambda: len(raw.answers) == 5, what="the five already open answered")
    assert emu.limit_violations == 0
    # now over the acknowledged limit: the fourth stream is refused, unprocessed
    raw.conn.remote_settings._settings[3] = [100]  # pretend we never saw the new limit
    sids = [raw.post(path, token, {"token": f"o{i}"}) for i in range(4)]
    wait_until(lambda: all(s in raw.answers for s in sids[:3]), what="three answered")
    assert {e.stream_id: e.error_code for e in raw.of(ev.StreamReset)} == {sids[3]: 7}
    assert emu.limit_violations == 1 and not raw.closed
    assert sorted(s.target for s in sends(emu))[-3:] == ["o0", "o1", "o2"]
    raw.close()


def test_http11_and_h2_requests_both_see_latency(emu, pki):
    token = _token(emu, pki)
    http = HttpClient(ca_file=pki.ca_file)
    t0 = time.monotonic()
    response = http.request("POST", emu.send_url, {"Authorization": f"Bearer {token}"},
                            json.dumps({"message": {"token": "slow"}}).encode())
    assert response.status == 200 and time.monotonic() - t0 >= 0.2
    http.close()


def _emulate(tmp_path, *options):
    import subprocess
    import sys

    from tests.helpers import ROOT, ccs_env

    proc = subprocess.Popen([sys.executable, "-m", "ccs", "emulate", "fcm", "--dir",
                             str(tmp_path), *options], stdout=subprocess.PIPE, text=True,
                            env=ccs_env(), cwd=ROOT)
    return proc, json.loads(proc.stdout.readline())


def test_ccs_emulate_fcm_options_for_http2(tmp_path):
    proc, info = _emulate(tmp_path / "a", "--latency", "0.01", "--streams", "7",
                          "--goaway-after", "3")
    try:
        raw = RawH2(info["port"], info["ca_file"])
        wait_until(lambda: raw.conn.remote_settings.max_concurrent_streams == 7, what="limit")
        sids = [raw.post(f"/v1/projects/{info['project']}/messages:send", "no-token",
                         {"token": f"c{i}"}) for i in range(5)]
        wait_until(lambda: raw.closed, what="GOAWAY after three")
        assert raw.of(ev.ConnectionTerminated)[0].last_stream_id == sids[2]
        assert raw.answers == dict.fromkeys(sids[:3], 401)  # no access token: answered 401
    finally:
        proc.terminate()
        proc.wait(10)
    proc, info = _emulate(tmp_path / "b", "--no-http2")
    try:
        plain = RawH2(info["port"], info["ca_file"], alpn=("h2", "http/1.1"))
        assert plain.alpn is None  # no ALPN offered at all
        plain.close()
    finally:
        proc.terminate()
        proc.wait(10)
