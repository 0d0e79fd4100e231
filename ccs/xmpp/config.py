"""CcsConfig: the settings of one CCS client (connections, timeouts, retries, the lease)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ccs.errors import ConfigError
from ccs.registry import CA_FILE, config_fields, read_env
from ccs.xmpp.window import CCS_MAX_PENDING

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
    # Prosody in tests/xmpp/test_interop_prosody.py, want the bare username: authcid=sender_id.
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
    # None when a budget shared with other processes is spent (ccs.gateway.lease); None: no budget.
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

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], **overrides: Any) -> CcsConfig:
        """From typed settings by TOML key (the gateway's Settings, or read_env's), as the CCS
        provider declares them (ccs/xmpp/declaration.py)."""
        from ccs.xmpp.settings import SETTINGS

        kw = config_fields(values, (*SETTINGS, CA_FILE), cls)
        kw.update(overrides)
        kw.setdefault("sender_id", "")
        kw.setdefault("server_key", "")
        return cls(**kw)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> CcsConfig:
        """From the CCS_* variables the CCS provider declares (CCS_SENDER_ID, CCS_SERVER_KEY,
        CCS_HOST, ...; see the settings table) and CCS_CA_FILE."""
        from ccs.xmpp.settings import SETTINGS

        env = os.environ if environ is None else environ
        return cls.from_settings(read_env((*SETTINGS, CA_FILE), env), **overrides)
