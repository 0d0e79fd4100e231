"""Admin API over real loopback HTTP: token checks, messages, status, stats, health, drain,
the event stream and /metrics. The blocking console client runs in gevent's threadpool."""

from __future__ import annotations

from typing import Any

import gevent
import pytest

from ccs.gateway.admin.client import AdminClient, AdminError
from ccs.gateway.outbox import MemoryStore
from ccs.gateway.settings import ConfigError, Settings
from ccs.gateway.supervisor import Supervisor
from tests.helpers import wait_until
from tests.providers import LocalProvider

TOKEN = "s3cret-admin-token"


def in_thread(fn: Any, *args: Any) -> Any:
    return gevent.get_hub().threadpool.apply(fn, args)


class Drainable(LocalProvider):
    def __init__(self) -> None:
        super().__init__("ccs")
        self.drained: list[str | None] = []

    def drain(self, session_id: str | None = None) -> str:
        self.drained.append(session_id)
        return session_id or "all"


@pytest.fixture
def gateway() -> Any:
    s = Settings.defaults().replace(admin__port=0, admin__token=TOKEN)
    p = Drainable()
    p.fail_tokens["dead"] = "DEVICE_UNREGISTERED"
    sup = Supervisor(s, store=MemoryStore(), providers={"ccs": p}).start()
    yield sup, p, AdminClient(sup.admin.port, TOKEN)
    sup.stop()


def test_no_token_refuses_to_start() -> None:
    sup = Supervisor(Settings.defaults().replace(admin__port=0), store=MemoryStore(),
                     providers={"ccs": LocalProvider("ccs")})
    with pytest.raises(ConfigError) as exc:
        sup.start()
    assert exc.value.key == "admin.token"


def test_missing_or_wrong_token_is_refused(gateway: Any) -> None:
    sup, _, client = gateway
    assert sup.admin.server.server_host == "127.0.0.1"
    for token in (None, "wrong", TOKEN + "x", ""):
        bad = AdminClient(sup.admin.port, token)
        for path in ("/v1/stats", "/metrics", "/v1/events", "/v1/messages/x"):
            with pytest.raises(AdminError) as exc:
                in_thread(bad.request, "GET", path)
            assert exc.value.status == 401
        with pytest.raises(AdminError):
            in_thread(bad.request, "POST", "/v1/messages", {"message": {"to": "t"}})
    assert sup.store.counts()["queued"] == 0 and sup.store.counts()["ok"] == 0


def test_post_batch_then_status_stats_health(gateway: Any) -> None:
    sup, p, client = gateway
    ids = in_thread(client.request, "POST", "/v1/messages",
                    {"messages": [{"to": f"t{i}"} for i in range(5)]})["ids"]
    assert len(ids) == 5
    for i in ids:
        assert sup.result(i).get(timeout=5).ok
    rec = in_thread(client.request, "GET", f"/v1/messages/{ids[0]}")
    assert rec["state"] == "ok" and rec["via"] == "ccs" and rec["id"] == ids[0]
    st = in_thread(client.request, "GET", "/v1/stats")
    prov = st["providers"]["ccs"]
    for key in ("uptime", "messages_sent", "messages_in_queue", "backing_off", "total_errors",
                "rate_limited_tokens", "logged_in", "token_age"):
        assert key in prov
    assert prov["messages_sent"] == 5 and st["outbox"]["ok"] == 5 and st["outbox"]["depth"] == 0
    assert in_thread(client.request, "GET", "/v1/health")["ok"] is True
    with pytest.raises(AdminError) as exc:
        in_thread(client.request, "GET", "/v1/messages/nope")
    assert exc.value.status == 404


def test_bad_requests_name_the_field(gateway: Any) -> None:
    _, _, client = gateway
    cases = [({"message": {"to": "t"}, "via": "apns"}, "via"),
             ({"messages": "x"}, "messages"),
             ({"nothing": 1}, "message"),
             ({"message": {"to": "t", "time_to_live": "soon"}}, "time_to_live")]
    for body, field in cases:
        with pytest.raises(AdminError) as exc:
            in_thread(client.request, "POST", "/v1/messages", body)
        assert exc.value.status == 400 and field in str(exc.value)


def test_drain_health_and_metrics(gateway: Any) -> None:
    sup, p, client = gateway
    assert in_thread(client.request, "POST", "/v1/drain", {"session_id": "s1"}) == \
        {"drained": "s1"}
    assert p.drained == ["s1"]
    sup.result(sup.enqueue({"to": "t"})).get(timeout=5)
    text = in_thread(client.request, "GET", "/metrics")
    assert 'ccs_outbox_messages{state="ok"} 1.0' in text
    assert 'ccs_messages_total{provider="ccs",status="ok"} 1.0' in text
    assert 'ccs_provider_healthy{provider="ccs"} 1.0' in text
    p.is_healthy = False
    health = in_thread(client.request, "GET", "/v1/health")
    assert health["ok"] is False and health["providers"] == {"ccs": False}


def test_event_stream_carries_outcomes_and_token_events(gateway: Any) -> None:
    sup, _, client = gateway

    def read(n: int) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for item in client.events(["outcome", "token"]):
            out.append(item)
            if len(out) == n:
                break
        return out

    reader = gevent.get_hub().threadpool.spawn(read, 2)
    wait_until(lambda: len(sup.bus) == 1, what="the reader subscribed")
    mid = sup.enqueue({"to": "dead"})
    events = reader.get(timeout=10)
    kinds = sorted(k for k, _ in events)
    assert kinds == ["outcome", "token"]
    by = dict(events)
    assert by["outcome"]["id"] == mid and by["outcome"]["status"] == "failed"
    assert by["token"]["token"] == "dead" and by["token"]["kind"] == "unregistered"


def test_a_busy_admin_port_is_a_config_error(gateway: Any) -> None:
    sup, _, _ = gateway
    s = Settings.defaults().replace(admin__port=sup.admin.port, admin__token=TOKEN)
    other = Supervisor(s, store=MemoryStore(), providers={"ccs": LocalProvider("ccs")})
    with pytest.raises(ConfigError) as exc:
        other.start()
    assert exc.value.key == "admin.port"
