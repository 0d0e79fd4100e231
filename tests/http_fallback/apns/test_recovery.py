"""ApnsClient recovery paths against the emulator: stream limits, GOAWAY, REFUSED_STREAM,
PING and idle, reconnect backoff, deadlines, flow control."""

import pytest

from ccs.outcome import Status
from http_fallback.apns.model import Notification
from tests.apns_support import client, emulator, token
from tests.helpers import wait_until


def note(n, **kw):
    return Notification(device=token(n), alert=kw.pop("alert", "hi"), **kw)


def test_stream_limit_follows_server_down_to_one_and_back(pki):
    with emulator(pki, max_concurrent_streams=8) as emu:
        c = client(emu)
        limits = []
        c.events.limit_changed.add(lambda e: limits.append(e.limit))
        try:
            assert all(r.get(10).ok for r in [c.send(note(i)) for i in range(20)])
            assert limits[:1] == [1] and 8 in limits  # 1 until a valid token, then raised
            emu.reject(token(99), "BadDeviceToken")
            assert c.send(note(99)).get(10).error == "BadDeviceToken"
            wait_until(lambda: limits[-1] == 1, what="drop to 1")
            results = [c.send(note(i)) for i in range(30)]
            assert all(r.get(10).ok for r in results)
            wait_until(lambda: limits[-1] == 8, what="raise to 8")
            assert emu.max_active <= 8 and emu.refused == 0
        finally:
            c.stop()


def test_goaway_retries_unprocessed_and_reports_unknown(pki):
    with emulator(pki, max_concurrent_streams=10) as emu:
        c = client(emu, connections=1)
        try:
            assert c.send(note(0)).get(10).ok  # stream 1; limit now 10
            emu.hold()
            results = [c.send(note(i)) for i in range(1, 7)]  # streams 3..13
            wait_until(lambda: len(emu.held_streams()) == 6, what="6 held")
            sids = [sid for _, sid in emu.held_streams()]
            emu.goaway("Shutdown", last_stream_id=sids[2])
            emu.release()
            outs = [r.get(10) for r in results]
            unknown = [o for o in outs if o.status is Status.UNKNOWN]
            ok = [o for o in outs if o.ok]
            assert len(unknown) == 3 and len(ok) == 3
            assert all(o.error == "Shutdown" for o in unknown)
            assert all(o.attempts == 2 for o in ok)  # re-sent once, on a new connection
            assert {s.connection for s in emu.seen if s.status == 200} == {1, 2}
        finally:
            c.stop()


def test_refused_stream_is_sent_again(pki):
    with emulator(pki) as emu:
        c = client(emu)
        try:
            emu.refuse_next(2)
            out = c.send(note(1)).get(10)
            assert out.ok and out.attempts == 3 and emu.refused == 2
        finally:
            c.stop()


def test_idle_connection_is_pinged_then_closed(pki):
    with emulator(pki) as emu:
        c = client(emu, ping_interval=0.05, idle_timeout=1.0)
        drops = []
        c.events.disconnected.add(drops.append)
        try:
            assert c.send(note(1)).get(10).ok
            wait_until(lambda: emu.pings() >= 2, what="pings")
            assert not drops  # pings answered: the connection stays
            wait_until(lambda: drops, what="idle close")
            assert drops[0].reason == "idle"
            assert c.send(note(2)).get(10).ok  # reconnects on demand
            assert len(emu.tokens_by_conn) == 2
        finally:
            c.stop()


def test_unanswered_ping_closes_the_connection(pki):
    with emulator(pki) as emu:
        c = client(emu, ping_interval=0.05, ping_timeout=0.2)
        drops = []
        c.events.disconnected.add(drops.append)
        try:
            assert c.send(note(1)).get(10).ok
            emu.freeze()
            wait_until(lambda: drops, what="ping timeout")
            assert drops[0].reason == "PING not answered"
            emu.thaw()
            assert c.send(note(2)).get(10).ok
        finally:
            c.stop()


def test_reconnect_backs_off(pki):
    with emulator(pki) as emu:
        c = client(emu, reconnect_base=0.05, request_timeout=10)
        failures = []
        c.events.connect_failed.add(failures.append)
        try:
            emu.drop_next_connections(3)
            assert c.send(note(1)).get(10).ok
            assert len(failures) == 3
            t = emu.connect_times
            gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
            assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2
        finally:
            c.stop()


def test_no_answer_before_deadline_is_unknown(pki):
    with emulator(pki) as emu:
        c = client(emu, request_timeout=1.0)
        try:
            assert c.send(note(1)).get(10).ok
            emu.hold()
            out = c.send(note(2)).get(10)
            assert out.status is Status.UNKNOWN and out.error == "Timeout"
            emu.release()
            assert c.send(note(3)).get(10).ok  # the slot was freed by RST_STREAM
        finally:
            c.stop()


def test_flow_control_windows_are_refilled(pki):
    # 300 x 4 kB bodies (far past the 64 kB windows) and 3,000 error bodies back
    with emulator(pki, max_concurrent_streams=100, drop_to_one=False) as emu:
        c = client(emu)
        try:
            big = [c.send(note(i, payload={"pad": "x" * 4000})) for i in range(300)]
            assert all(r.get(20).ok for r in big)
            emu.reject(token(7), "BadDeviceToken", times=3000)
            bad = [c.send(note(7)) for _ in range(3000)]
            assert all(r.get(30).error == "BadDeviceToken" for r in bad)
            assert c.send(note(1)).get(10).ok
        finally:
            c.stop()


@pytest.mark.parametrize("push_type,size,ok", [("alert", 4000, True), ("alert", 4200, False),
                                               ("voip", 5000, True), ("voip", 5200, False)])
def test_payload_limits_end_to_end(pki, push_type, size, ok):
    with emulator(pki) as emu:
        c = client(emu)
        try:
            n = Notification(device=token(1), push_type=push_type, payload={"p": "é" * (size // 2)})
            out = c.send(n).get(10)
            assert out.ok is ok
            if not ok:
                assert out.error == "InvalidNotification" and "limit" in out.description
        finally:
            c.stop()


def test_stop_resolves_everything(pki):
    with emulator(pki) as emu:
        c = client(emu)
        emu.hold()
        results = [c.send(note(i)) for i in range(5)]
        wait_until(lambda: emu.held_streams(), what="one held")
        c.stop(timeout=0.2)
        outs = [r.get(1) for r in results]
        assert {o.status for o in outs} <= {Status.UNKNOWN, Status.FAILED}
        assert sum(o.status is Status.UNKNOWN for o in outs) == 1  # the one on the wire


def test_unreachable_server_fails_by_deadline(pki):
    from gevent import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now

    class Nowhere:
        ca_file = pki.ca_file

    Nowhere.port = port
    c = client(Nowhere, request_timeout=0.3, reconnect_base=0.05)
    failures = []
    c.events.connect_failed.add(failures.append)
    try:
        out = c.send(note(1)).get(5)
        assert out.status is Status.FAILED and out.error == "Timeout" and out.retryable
        assert "refused" in out.description.lower() and failures
        wait_until(lambda: c.pool.queue.qsize() == 0, what="stale request dropped")
        assert not c.healthy()
    finally:
        c.stop()


def test_delayed_replies_still_arrive(pki):
    with emulator(pki, response_delay=0.05, max_concurrent_streams=10) as emu:
        c = client(emu)
        try:
            results = [c.send(note(i)) for i in range(10)]
            assert all(r.get(10).ok for r in results)
        finally:
            c.stop()


def test_limit_dropped_to_one_with_streams_open_queues_the_rest(pki):
    with emulator(pki, max_concurrent_streams=100) as emu:
        c = client(emu, request_timeout=20)
        limits = []
        c.events.limit_changed.add(lambda e: limits.append(e.limit))
        try:
            assert c.send(note(0)).get(10).ok
            emu.stall()
            results = [c.send(note(i)) for i in range(1, 300)]
            wait_until(lambda: len(emu.held_streams()) == 100, what="100 streams open")
            emu.set_stream_limit(1)
            wait_until(lambda: limits[-1] == 1, what="limit 1 acknowledged")
            emu.release()  # 100 answers; the 199 queued go out as the limit allows
            assert all(r.get(20).ok for r in results)
            assert emu.refused == 0 and c.stats()["unknown"] == 0
            assert emu.connections() == 1  # over the limit, the emulator would have closed it
        finally:
            c.stop()


def test_goaway_with_hundreds_of_streams_above_last_stream_id(pki):
    with emulator(pki) as emu:
        c = client(emu, request_timeout=20)
        try:
            assert c.send(note(0)).get(10).ok
            emu.stall()
            results = [c.send(note(i)) for i in range(1, 401)]
            wait_until(lambda: len(emu.held_streams()) == 400, what="400 streams open")
            last = sorted(sid for _, sid in emu.held_streams())[9]
            emu.goaway("Shutdown", last_stream_id=last)
            emu.release()
            outs = [r.get(20) for r in results]
            unknown = [o for o in outs if o.status is Status.UNKNOWN]
            assert len(unknown) == 10 and all(o.error == "Shutdown" for o in unknown)
            assert sum(o.ok for o in outs) == 390 and emu.accepted == 391
            accepted_ids = [s.headers["apns-id"] for s in emu.seen if s.status == 200]
            assert len(accepted_ids) == len(set(accepted_ids))  # none sent twice
        finally:
            c.stop()
