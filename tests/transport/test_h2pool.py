"""The HTTP/2 pool on its own: its pure rules, and H2Pool with a provider-neutral handler
against tests/hostile_h2.py (the pool knows nothing of APNs)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter

from gevent.event import Event

from ccs.transport.h2pool import H2Events, H2Pool
from ccs.transport.h2request import (
    FINAL,
    RETRY,
    ConnectionInfo,
    FailureKind,
    H2Request,
    H2Response,
    TransportFailure,
)
from ccs.transport.h2rules import (
    H2PoolConfig,
    goaway_reason,
    retry_delay,
    stream_limit,
    unanswered,
)
from ccs.transport.tls import client_context
from tests.greenlet_errors import no_greenlet_errors  # noqa: F401 - autouse fixture
from tests.helpers import ROOT
from tests.hostile_h2 import Behaviour, HostileApns, verdict


def test_stream_limit_is_one_until_settings_then_the_servers_capped_by_ours():
    assert stream_limit(None, 1000) == 1
    assert stream_limit(0, 1000) == 1000  # SETTINGS without a limit
    assert stream_limit(1, 1000) == 1 and stream_limit(5000, 1000) == 1000


def test_an_unanswered_stream_is_unknown_unless_the_server_said_it_was_not_processed():
    assert unanswered(7, settings_seen=True, goaway_last=None) is FailureKind.UNKNOWN
    assert unanswered(7, settings_seen=True, goaway_last=7) is FailureKind.UNKNOWN
    assert unanswered(9, settings_seen=True, goaway_last=7) is FailureKind.NOT_SENT
    assert unanswered(1, settings_seen=False, goaway_last=None) is FailureKind.NOT_SENT


def test_retry_budget_counts_attempts_seconds_and_the_deadline():
    cfg = H2PoolConfig("h", 1, retry_attempts=2, retry_seconds=10.0, backoff_base=1.0,
                       backoff_cap=4.0)
    rnd = random.Random(1)
    first = retry_delay(cfg, 1, submitted=0.0, deadline=30.0, now=0.1, wanted=None, rnd=rnd)
    assert first is not None and 1.0 <= first <= 1.25  # backoff with up to 25% jitter
    second = retry_delay(cfg, 2, submitted=0.0, deadline=30.0, now=1.0, wanted=None, rnd=rnd)
    assert second is not None and 2.0 <= second <= 2.5
    assert retry_delay(cfg, 3, 0.0, 30.0, 1.0, None) is None  # attempts spent
    assert retry_delay(cfg, 1, 0.0, 30.0, 9.5, None) is None  # would start past 10 s
    assert retry_delay(cfg, 1, 0.0, 1.5, 0.1, wanted=2.0) is None  # past the deadline
    assert retry_delay(cfg, 1, 0.0, 30.0, 0.1, wanted=0.0) == 0.0  # the provider's delay


def test_goaway_debug_data_gives_a_short_reason():
    assert goaway_reason(b'{"reason":"Shutdown"}') == "Shutdown"
    assert goaway_reason(b"max_age") == "max_age"  # plain text, as other servers send
    assert goaway_reason(b"\xff\x00") is None and goaway_reason(None) is None
    assert goaway_reason(b'{"reason": 5}') is None


def test_the_pool_imports_nothing_provider_specific():
    code = ("import sys, ccs.transport.h2pool; "
            "print([m for m in sys.modules if m.startswith(('http_fallback', 'ccs.'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    loaded = json.loads(out.stdout.replace("'", '"'))
    assert "ccs.transport.h2pool" in loaded
    seam = {"ccs.backoff", "ccs.outcome"}  # what the transport may use below it
    assert all(m.startswith("ccs.transport") or m in seam for m in loaded), loaded


class Plain:
    """A provider-neutral handler: retries 429 and 5xx, records every finish."""

    def __init__(self, count: int) -> None:
        self.finished: Counter[int] = Counter()
        self.results: dict[int, H2Response | TransportFailure] = {}
        self.closed: list[ConnectionInfo] = []
        self.count = count
        self.done = Event()
        self.fail_headers = 0

    def request_headers(self, conn: ConnectionInfo) -> list[tuple[bytes, bytes]]:
        if self.fail_headers:
            self.fail_headers -= 1
            raise RuntimeError("no credentials yet")
        return [(b"authorization", b"bearer plain")]

    def judge(self, req: H2Request, resp: H2Response) -> object:
        return RETRY if resp.status == 429 or resp.status >= 500 else FINAL

    def finish(self, req: H2Request, result: H2Response | TransportFailure) -> None:
        self.finished[req.tag] += 1
        self.results[req.tag] = result
        if len(self.finished) == self.count:
            self.done.set()

    def connection_closed(self, conn: ConnectionInfo) -> None:
        self.closed.append(conn)


def run_pool(pki, behaviour: Behaviour, count: int, fail_headers: int = 0):
    handler = Plain(count)
    handler.fail_headers = fail_headers
    with HostileApns(pki, behaviour) as server:
        cfg = H2PoolConfig("127.0.0.1", server.port, connections=2, retry_attempts=1,
                           backoff_base=0.01, reconnect_base=0.01)
        pool = H2Pool(cfg, client_context(ca_file=pki.ca_file, alpn=["h2"]), handler,
                      H2Events(), name="plain")
        pool.start()
        try:
            for n in range(count):
                apns_id = f"00000000-0000-4000-8000-{n:012x}"
                pool.submit(H2Request(f"/3/device/{n:064x}".encode(),
                                      [(b"apns-id", apns_id.encode())], b"{}", tag=n))
            assert handler.done.wait(60)
            stats = pool.stats()
        finally:
            pool.stop(5)
    return handler, server, stats


def test_a_neutral_handler_gets_each_request_finished_once(pki):
    handler, server, stats = run_pool(pki, Behaviour(refusals=True), 400)
    assert set(handler.finished.values()) == {1}
    for n, result in handler.results.items():
        assert isinstance(result, H2Response) and result.status == verdict(f"{n:064x}")[0]
    assert stats["retried"] == sum(verdict(f"{n:064x}")[0] in (429, 500, 503)
                                   for n in range(400))  # one retry each, then final
    assert [c["protocol"] for c in stats["connections"]] == ["h2"] * len(stats["connections"])
    assert server.violations == 0 and server.resent_after_final == 0


def test_request_headers_failing_closes_the_connection_and_nothing_is_lost(pki):
    handler, server, stats = run_pool(pki, Behaviour(), 50, fail_headers=3)
    assert set(handler.finished.values()) == {1}
    assert all(r.status == 200 for r in handler.results.values())
    assert len(handler.closed) >= 3  # each failure closed its connection
