"""Prometheus metrics read from supervisor.stats() at scrape time (no counters in the hot path)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayCollector:
    def __init__(self, supervisor: Any) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        st = self.supervisor.stats()
        box = st["outbox"]
        g = GaugeMetricFamily("ccs_outbox_messages", "Outbox messages per state", labels=["state"])
        for state in ("queued", "in_flight", "ok", "failed", "expired", "unknown"):
            g.add_metric([state], box.get(state, 0))
        yield g
        yield CounterMetricFamily("ccs_outbox_resent", "Messages sent again after a crash left "
                                  "them in flight", value=box.get("resent", 0))
        yield GaugeMetricFamily("ccs_in_flight", "Messages being sent now", value=st["in_flight"])
        yield GaugeMetricFamily("ccs_uptime_seconds", "Seconds since the gateway started",
                                value=st["uptime"])
        lat = GaugeMetricFamily("ccs_send_latency_ms", "Send latency percentiles over recent "
                                "messages", labels=["provider", "quantile"])
        sent = CounterMetricFamily("ccs_messages", "Messages that reached an outcome",
                                   labels=["provider", "status"])
        up = GaugeMetricFamily("ccs_provider_healthy", "1 when the provider can send now",
                               labels=["provider"])
        limited = GaugeMetricFamily("ccs_rate_limited_tokens", "Token rate-limit events",
                                    labels=["provider"])
        for name, p in st["providers"].items():
            up.add_metric([name], 1 if p.get("healthy") else 0)
            limited.add_metric([name], p.get("rate_limited_tokens", 0) or 0)
            for status, n in (p.get("outcomes") or {}).items():
                sent.add_metric([name, status], n)
            for q, v in (p.get("latency_ms") or {}).items():
                if v is not None:
                    lat.add_metric([name, "0." + q[1:]], v)
        yield from (sent, up, limited, lat)
        restarts = CounterMetricFamily("ccs_child_restarts", "Restarts of supervised children",
                                       labels=["child"])
        for name, c in st["children"].items():
            restarts.add_metric([name], c["restarts"])
        yield restarts
        pending = GaugeMetricFamily("ccs_events_pending", "Stored events not yet handled",
                                    labels=["kind"])
        for kind, n in st["events_pending"].items():
            pending.add_metric([kind], n)
        yield pending


def render(supervisor: Any) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(supervisor))  # type: ignore[arg-type]
    return generate_latest(registry)
