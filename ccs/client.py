"""CcsClient: what a gevent program calls to talk to Google's CCS over persistent XMPP sessions.

    client = CcsClient(CcsConfig.from_env())
    client.on_upstream(store_and_handle)      # acked after the handler returns
    client.start()
    outcome = client.send(build_message("token", data={"k": "v"})).get()
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import gevent
from gevent.event import Event

from ccs.errors import ConfigError
from ccs.message import validate_downstream
from ccs.outcome import SendResult
from ccs.pool import Entry, Pool
from ccs.protocol import Receipt, Upstream
from ccs.provider import Provider
from ccs.window import CCS_MAX_PENDING

DEFAULT_HOST = "fcm-xmpp.googleapis.com"


@dataclass
class CcsConfig:
    """Connection settings; `from_env` reads the CCS_* variables."""

    sender_id: str
    server_key: str = field(repr=False)
    host: str = DEFAULT_HOST
    port: int = 5235
    domain: str = "gcm.googleapis.com"  # stream `to` and the SASL authcid's domain
    # SASL PLAIN authcid; None means `<sender_id>@<domain>` (CCS). Other XMPP servers, such as
    # Prosody in tests/test_interop_prosody.py, want the bare username: authcid=sender_id.
    authcid: str | None = None
    ca_file: str | None = None  # adds trust; verification is never turned off
    tls_server_name: str | None = None  # name checked in the certificate (default: host)
    connections: int = 4
    window: int = CCS_MAX_PENDING
    resource_prefix: str = "ccs-gateway"
    connect_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 30.0
    reconnect_initial: float = 1.0
    reconnect_max: float = 60.0
    retry_initial: float = 1.0
    max_retry_seconds: float = 3600.0
    zero_ttl_grace: float = 1.0
    drain_grace: float = 30.0
    no_session_timeout: float = 0.0  # > 0: hand back never-sent messages after this long
    ack_timeout: float = 60.0  # a message unanswered this long: its session is closed (0: off)
    handler_concurrency: int = 100
    # Before each session: returns the callable that gives the lease back at its close, or
    # None when a budget shared with other processes is spent (ccs.lease); None: no budget.
    lease: Callable[[], Callable[[], None] | None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.sender_id:
            raise ConfigError("CCS_SENDER_ID", "required")
        if not self.server_key:
            raise ConfigError("CCS_SERVER_KEY", "required")
        if not 1 <= self.connections <= 1000:
            raise ConfigError("CCS_CONNECTIONS", "must be 1..1000 (CCS allows 1000 per sender)")
        if not 1 <= self.window <= CCS_MAX_PENDING:
            raise ConfigError("CCS_WINDOW", f"must be 1..{CCS_MAX_PENDING} (the CCS limit)")
        if not 0 < self.port < 65536:
            raise ConfigError("CCS_PORT", "must be 1..65535")
        if self.ca_file and not os.path.isfile(self.ca_file):
            raise ConfigError("CCS_CA_FILE", f"no such file: {self.ca_file}")

    ENV = {
        "host": "CCS_HOST", "port": "CCS_PORT", "sender_id": "CCS_SENDER_ID",
        "server_key": "CCS_SERVER_KEY", "ca_file": "CCS_CA_FILE",
        "connections": "CCS_CONNECTIONS", "domain": "CCS_DOMAIN", "window": "CCS_WINDOW",
        "no_session_timeout": "CCS_NO_SESSION_TIMEOUT", "ack_timeout": "CCS_ACK_TIMEOUT",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> CcsConfig:
        env = os.environ if environ is None else environ
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, var in cls.ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            if kinds[name] in ("int", "float"):
                try:
                    values[name] = int(raw) if kinds[name] == "int" else float(raw)
                except ValueError:
                    raise ConfigError(var, f"not a number: {raw!r}") from None
            else:
                values[name] = raw
        values.update(overrides)
        values.setdefault("sender_id", "")
        values.setdefault("server_key", "")
        return cls(**values)


class CcsClient(Provider):
    """A pool of CCS sessions behind one send(); a Provider named "ccs"."""

    name = "ccs"

    def __init__(self, config: CcsConfig) -> None:
        super().__init__()
        self.config = config
        self.upstream_handler: Callable[[Upstream], Any] | None = None
        self.receipt_handler: Callable[[Receipt], Any] | None = None
        self._pool = Pool(self, config)
        self._ready = Event()
        self._started_at: float | None = None
        self._sweeper: gevent.Greenlet | None = None
        self._down_since: float | None = None  # since when no session has been usable

    def on_upstream(self, fn: Callable[[Upstream], Any]) -> None:
        """fn(Upstream) runs in a greenlet; the ack goes out after it returns, none if it raises."""
        self.upstream_handler = fn

    def on_receipt(self, fn: Callable[[Receipt], Any]) -> None:
        """fn(Receipt) for delivery receipts; acked with the full dr2: id after it returns."""
        self.receipt_handler = fn

    # Provider --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._started_at is not None:
            return
        self._started_at = time.monotonic()
        self._down_since = self._started_at
        self._pool.start()
        self._sweeper = gevent.spawn(self._sweep)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until at least one session is logged in; False on timeout."""
        return self._ready.wait(timeout)

    def send(self, message: Mapping[str, Any]) -> SendResult:
        """Validate (InvalidMessage names the field), queue, and return the pending outcome."""
        if self._started_at is None:
            raise RuntimeError("CcsClient.send() before start()")
        msg = validate_downstream(message)
        result = SendResult(msg["message_id"])
        cfg = self.config
        self._pool.accept(Entry(msg, result, time.monotonic(), cfg.max_retry_seconds,
                                cfg.zero_ttl_grace))
        return result

    def stop(self, timeout: float = 10.0) -> None:
        if self._sweeper is not None:
            self._sweeper.kill()
        self._pool.stop(timeout)
        self._ready.clear()

    def healthy(self) -> bool:
        return any(s.usable for s in self._pool.sessions)

    def drain(self, session_id: int | None = None) -> int:
        return self._pool.drain(session_id)

    def stats(self) -> dict[str, Any]:
        pool = self._pool
        sessions = [
            {"id": s.id, "state": s.state, "pending": len(s.window), "sent": s.sent,
             "jid": s.jid, "close_reason": s.close_reason}
            for s in pool.sessions
        ]
        return {
            "provider": self.name,
            "uptime": time.monotonic() - self._started_at if self._started_at else 0.0,
            "logged_in": self.healthy(),
            "sessions": sessions,
            "in_flight": sum(s["pending"] for s in sessions),
            "messages_in_queue": len(pool.backlog) + len(pool.scheduled),
            **pool.counters,
        }

    # internals -------------------------------------------------------------------------------

    def ready_changed(self) -> None:
        if self.healthy():
            self._ready.set()
            self._down_since = None
        else:
            self._ready.clear()
            if self._down_since is None:
                self._down_since = time.monotonic()

    def _sweep(self) -> None:
        limit = self.config.no_session_timeout
        ack_timeout = self.config.ack_timeout
        tick = min(x for x in (1.0, limit, ack_timeout / 2) if x > 0)
        while True:
            gevent.sleep(tick)
            if ack_timeout > 0:
                self._pool.check_acks(time.monotonic(), ack_timeout)
            if self._pool.backlog and not self.healthy():
                down = time.monotonic() - (self._down_since or time.monotonic())
                self._pool.sweep_backlog(hand_back=limit > 0 and down >= limit)
