"""ApnsConfig: where APNs is, how we authenticate and how the pool behaves; checked early."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ccs.errors import ConfigError
from ccs.registry import CA_FILE, config_fields, read_env
from ccs.transport.h2rules import H2PoolConfig
from http_fallback.apns.settings import BINARY_SETTINGS, SETTINGS

PRODUCTION = "api.push.apple.com"
SANDBOX = "api.sandbox.push.apple.com"
_SECRETS = {"key_data", "cert_data", "pfx_data", "passphrase"}
# Settings keys whose field is named otherwise (the rest: the key after "apns.").
RENAMES = {"apns.cert": "cert_file", "apns.cert_key": "key_for_cert", "apns.pfx": "pfx_file",
           "apns.pfx_passphrase": "passphrase", "apns.retry_attempts": "retries",
           "apns.binary_cache": "binary_cache_length", "apns.binary_wait": "binary_cache_wait",
           "apns.binary_quiet": "binary_quiet_period"}


@dataclass
class ApnsConfig:
    host: str = PRODUCTION
    port: int = 443
    server_hostname: str | None = None  # TLS name to verify; defaults to host
    ca_file: str | None = None  # adds trust (emulator CA); never removes verification
    topic: str | None = None  # default bundle id
    # token auth
    key_file: str | None = None
    key_data: bytes | None = None
    key_id: str | None = None
    team_id: str | None = None
    token_refresh: float = 50 * 60  # seconds; kept between 20 and 60 minutes
    # certificate auth
    cert_file: str | None = None
    key_for_cert: str | None = None
    cert_data: bytes | None = None
    pfx_file: str | None = None
    pfx_data: bytes | None = None
    passphrase: str | None = None
    # pool
    connections: int = 2
    max_streams: int = 1000  # our own cap on streams in flight per connection
    connect_timeout: float = 10.0
    request_timeout: float = 30.0  # per request: queued plus in flight
    ping_interval: float = 60.0  # PING a connection idle this long
    ping_timeout: float = 10.0
    idle_timeout: float = 600.0  # close a connection unused this long
    retries: int = 3  # extra attempts for retryable reasons (429, 500, 503...)
    retry_seconds: float = 30.0  # no retry starts later than this after the send
    goaway_grace: float = 10.0  # wait this long for streams a GOAWAY left to finish
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    reconnect_base: float = 0.5
    reconnect_cap: float = 30.0
    # binary interface (retired 2021) and its feedback service
    legacy_host: str = "gateway.push.apple.com"
    legacy_port: int = 2195
    feedback_host: str = "feedback.push.apple.com"
    feedback_port: int = 2196
    binary_command: int = 2  # 2 (frames of items) or 1 (enhanced format)
    binary_cache_length: int = 1000  # unresolved notifications before the writer waits
    binary_cache_wait: float = 0.1  # seconds the writer waits for room before the cache grows
    binary_quiet_period: float = 1.0  # seconds without an error after which a write is ok

    def __post_init__(self) -> None:
        self.validate()

    @property
    def uses_token(self) -> bool:
        return bool(self.key_file or self.key_data)

    @property
    def uses_certificate(self) -> bool:
        return bool(self.cert_file or self.cert_data or self.pfx_file or self.pfx_data)

    def validate(self) -> None:
        if self.uses_token and self.uses_certificate:
            raise ConfigError("ApnsConfig.key_file",
                              "give a signing key or a certificate, not both")
        if self.uses_token and not (self.key_id and self.team_id):
            raise ConfigError("ApnsConfig.key_id",
                              "key_id and team_id are required with a signing key")
        if not 20 * 60 <= self.token_refresh <= 60 * 60:
            raise ConfigError("ApnsConfig.token_refresh", "must be 1200-3600 seconds")
        if not 0 < self.port < 65536:
            raise ConfigError("ApnsConfig.port", "must be 1-65535")
        if self.binary_command not in (1, 2):
            raise ConfigError("ApnsConfig.binary_command", "must be 1 or 2")
        if self.binary_cache_length < 1:
            raise ConfigError("ApnsConfig.binary_cache_length", "must be >= 1")
        if self.binary_quiet_period <= 0 or self.binary_cache_wait < 0:
            raise ConfigError("ApnsConfig.binary_quiet_period",
                              "binary_quiet_period must be > 0 and binary_cache_wait >= 0")
        try:
            self.pool_config()
        except ValueError as e:  # the pool checks its own half; name the field as it is here
            field = {"retry_attempts": "retries"}
            name = str(e).split(".", 1)[1].split(" ", 1)[0] if "." in str(e) else ""
            raise ConfigError("ApnsConfig." + field.get(name, name),
                              str(e).replace("H2PoolConfig." + name + " ", "")) from None

    def pool_config(self) -> H2PoolConfig:
        """The HTTP/2 pool's half of this configuration."""
        return H2PoolConfig(
            host=self.host, port=self.port, server_hostname=self.server_hostname,
            connections=self.connections, max_streams=self.max_streams,
            connect_timeout=self.connect_timeout, request_timeout=self.request_timeout,
            ping_interval=self.ping_interval, ping_timeout=self.ping_timeout,
            idle_timeout=self.idle_timeout, retry_attempts=self.retries,
            retry_seconds=self.retry_seconds, backoff_base=self.backoff_base,
            backoff_cap=self.backoff_cap, reconnect_base=self.reconnect_base,
            reconnect_cap=self.reconnect_cap, goaway_grace=self.goaway_grace,
            path_never_indexed=True)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], **overrides: object) -> ApnsConfig:
        """From typed settings by TOML key (apns.*, ccs.ca_file); apns.sandbox picks Apple's
        development hosts for whatever host is not set."""
        kw: dict[str, Any] = config_fields(values, (*SETTINGS, *BINARY_SETTINGS, CA_FILE), cls,
                                           RENAMES)
        if values.get("apns.sandbox"):
            kw.setdefault("host", SANDBOX)
            kw.setdefault("legacy_host", "gateway.sandbox.push.apple.com")
            kw.setdefault("feedback_host", "feedback.sandbox.push.apple.com")
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: object) -> ApnsConfig:
        """Read CCS_APNS_* (and CCS_CA_FILE) as the provider declares them; a malformed value
        names its variable."""
        declared = (*SETTINGS, *BINARY_SETTINGS, CA_FILE)
        return cls.from_settings(read_env(declared, environ), **overrides)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRETS and value is not None:
                value = "<hidden>"
            shown.append(f"{f.name}={value!r}")
        return "ApnsConfig(" + ", ".join(shown) + ")"
