"""FcmConfig: every setting of the FCM v1 client, checked when it is made."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from ccs.errors import ConfigError
from ccs.registry import CA_FILE, config_fields, read_env
from http_fallback.fcm.protocol import FcmRetryPolicy
from http_fallback.fcm.settings import SETTINGS

# Settings keys whose field is named otherwise (the rest: the key after "fcm.").
RENAMES = {"fcm.credentials": "credentials_file", "fcm.project": "project_id",
           "fcm.url": "base_url"}


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def url_problem(url: str) -> str | None:
    """Why `url` may not carry access tokens: https only, plain http only on loopback."""
    parts = urlsplit(str(url))
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"must be an https URL, got {url!r}"
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        return "plain http is allowed on loopback only (access tokens would travel in clear)"
    return None


@dataclass(frozen=True)
class FcmConfig:
    """Settings of one FcmClient; ValueError naming the setting when one is wrong."""

    credentials_file: str
    project_id: str | None = None  # default: the credentials file's project_id
    base_url: str = "https://fcm.googleapis.com"
    iid_url: str = "https://iid.googleapis.com"
    ca_file: str | None = None  # adds trust (an emulator's CA); never removes checks
    concurrency: int = 100  # HTTP/1.1: requests in flight at once (and keep-alive connections)
    connections: int = 8  # HTTP/2 connections, each with up to the server's stream limit
    http2: bool = True  # False: HTTP/1.1 only, even when the server offers h2
    queue_size: int = 10_000  # accepted messages waiting for a worker; send() blocks beyond
    timeout: float = 30.0  # seconds for one HTTP exchange
    connect_timeout: float = 10.0
    max_attempts: int = 5  # tries per message, the first included
    retry_base_delay: float = 1.0
    retry_max_delay: float = 600.0
    quota_delay: float = 60.0  # first wait after QUOTA_EXCEEDED without Retry-After
    retry_jitter: float = 0.2
    retry_deadline: float = 900.0  # no new try starts later than this after the first
    refresh_margin: float = 225.0  # refresh the access token this early
    sender_id_mismatch_is_dead: bool = False  # report SENDER_ID_MISMATCH as an invalid token

    def __post_init__(self) -> None:
        if not self.credentials_file:
            raise ConfigError("credentials_file", "required (CCS_FCM_CREDENTIALS)")
        for name in ("base_url", "iid_url"):
            problem = url_problem(getattr(self, name))
            if problem:
                raise ConfigError(name, problem)
        for name in ("concurrency", "connections", "queue_size", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        if not isinstance(self.http2, bool):
            raise ConfigError("http2", f"must be True or False, got {self.http2!r}")
        for name in ("timeout", "connect_timeout", "retry_base_delay", "retry_max_delay",
                     "quota_delay", "retry_jitter", "retry_deadline", "refresh_margin"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(name, f"must be a non-negative number, got {value!r}")

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)[:6])
        return f"FcmConfig({shown}, ...)"

    @property
    def retry(self) -> FcmRetryPolicy:
        return FcmRetryPolicy(self.max_attempts, self.retry_base_delay, self.retry_max_delay,
                              self.quota_delay, self.retry_jitter, self.retry_deadline)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FcmConfig:
        """From a settings mapping; an unknown key is an error, by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(unknown[0], "unknown FCM setting")
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> FcmConfig:
        """From CCS_FCM_CREDENTIALS, CCS_FCM_PROJECT, CCS_FCM_URL, CCS_FCM_IID_URL,
        CCS_FCM_CONCURRENCY, CCS_FCM_CONNECTIONS and CCS_CA_FILE; an unknown CCS_FCM_* variable
        is an error."""
        known = {s.env for s in SETTINGS}
        unknown = sorted(k for k in environ if k.startswith("CCS_FCM_") and k not in known)
        if unknown:
            raise ConfigError(unknown[0], "unknown variable")
        return cls.from_settings(read_env((*SETTINGS, CA_FILE), environ), **overrides)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], **overrides: Any) -> FcmConfig:
        """From typed settings by TOML key (fcm.*, ccs.ca_file); fcm.credentials required."""
        kw = config_fields(values, (*SETTINGS, CA_FILE), cls, RENAMES)
        kw.update(overrides)
        if "credentials_file" not in kw:
            raise ConfigError("CCS_FCM_CREDENTIALS", "required (path of a service-account file)")
        return cls.from_dict(kw)
