"""Every setting: TOML key, CCS_* variable, type, default, meaning.

The gateway declares its own here (REGISTRY); each provider declares its own in its
`ProviderSpec` (the CCS provider in ccs/xmpp/declaration.py, the HTTP ones in
http_fallback/<provider>/declaration.py, plugins in theirs), and `declared()` puts them together.

The environment overrides the file. An unknown key or a bad value raises ConfigError naming the
key (or variable); the console maps it to exit status 2. Secret values never appear in reprs.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ccs import registry
from ccs.errors import ConfigError  # one ConfigError for the whole package
from ccs.registry import Setting

DEFAULT_CONFIG = "ccs.toml"


__all__ = ["REGISTRY", "ConfigError", "Setting", "Settings", "mask_urls", "rst_table"]

_URL_AUTH = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/@\s:]*)(:[^/@\s]*)?@")


def mask_urls(text: str) -> str:
    """`text` with the credentials inside any URL replaced by ***: a password after its user
    (user:***@host), or the whole user part when it stands alone (it may be a token)."""
    return _URL_AUTH.sub(lambda m: f"{m[1]}{m[2]}:***@" if m[3] else f"{m[1]}***@", text)


def _s(key: str, env: str, type_: str, default: Any, meaning: str, **kw: Any) -> Setting:
    return Setting(key, env, type_, default, meaning, **kw)


PORT = {"minimum": 0, "maximum": 65535}
PROVIDER_NAMES = registry.BUILTIN_NAMES

REGISTRY: tuple[Setting, ...] = (
    # the gateway itself
    _s("gateway.providers", "CCS_PROVIDERS", "list", ["ccs"],
       "providers to start, comma-separated: ccs, http, legacy, c2dm, mpns, apns, apns-binary, "
       "or one a plugin declares"),
    _s("gateway.plugins", "CCS_PLUGINS", "list", [],
       "Python modules to import before settings are checked (they register a "
       "ccs.registry.ProviderSpec; entry points in ccs_gateway.providers load too)"),
    _s("gateway.fcm_fallback", "CCS_FALLBACK_PROVIDER", "str", "http",
       "provider for FCM targets when no CCS session is healthy (empty: wait for CCS)"),
    _s("gateway.ccs_startup_grace", "CCS_STARTUP_GRACE", "float", 10.0,
       "seconds after start during which FCM messages wait for CCS instead of the fallback",
       minimum=0),
    _s("gateway.concurrency", "CCS_PROVIDER_CONCURRENCY", "int", 500,
       "messages in flight per provider at most", minimum=1),
    _s("gateway.stop_timeout", "CCS_STOP_TIMEOUT", "float", 10.0,
       "seconds a clean stop waits for in-flight messages", minimum=0),
    _s("gateway.log_level", "CCS_LOG_LEVEL", "str", "info",
       "how much `ccs run` logs: debug, info, warning or error",
       choices=("debug", "info", "warning", "error")),
    _s("gateway.restart_backoff", "CCS_RESTART_BACKOFF", "float", 1.0,
       "first delay in seconds before restarting a crashed child (doubles, at most 60)",
       minimum=0),
    registry.CA_FILE,
    # outbox
    _s("outbox.path", "CCS_OUTBOX", "str", "./ccs-outbox.sqlite",
       "SQLite outbox file (':memory:' keeps it in memory: nothing survives a restart), or a "
       "Redis URL (redis://, rediss:// for TLS, redis+cluster://H:P,H:P/ or rediss+cluster://; "
       "?prefix=P): one queue shared by many gateways"),
    _s("outbox.password", "CCS_OUTBOX_PASSWORD", "str", None,
       "Redis outbox: password (AUTH) when the URL gives none", secret=True),
    _s("outbox.shards", "CCS_OUTBOX_SHARDS", "int", 16,
       "Redis outbox: shards of a new outbox (each one cluster slot; an existing outbox keeps "
       "its count)", minimum=1, maximum=1024),
    _s("outbox.dedup_horizon", "CCS_OUTBOX_DEDUP_HORIZON", "float", 2_505_600.0,
       "Redis outbox: seconds an upstream message or receipt id is remembered to drop CCS "
       "re-deliveries (default 29 days: longer than the 28-day maximum time_to_live)",
       minimum=1),
    _s("outbox.sync", "CCS_OUTBOX_SYNC", "str", "normal",
       "SQLite synchronous mode: normal survives a process crash, full also a power loss",
       choices=("normal", "full")),
    _s("outbox.threadpool", "CCS_OUTBOX_THREADPOOL", "bool", False,
       "run SQLite transactions in gevent's threadpool instead of in the hub"),
    _s("outbox.batch", "CCS_OUTBOX_BATCH", "int", 2000,
       "operations per group-commit transaction at most", minimum=1),
    _s("outbox.reclaim_idle", "CCS_OUTBOX_RECLAIM_IDLE", "float", 30.0,
       "Redis outbox: seconds a message held by a silent gateway waits before another gateway "
       "takes it over (at least twice outbox.heartbeat)", minimum=0.01),
    _s("outbox.heartbeat", "CCS_OUTBOX_HEARTBEAT", "float", 5.0,
       "Redis outbox: seconds between heartbeats; a gateway silent for three is gone and its "
       "CCS connection leases expire", minimum=0.005),
    _s("outbox.stream_maxlen", "CCS_OUTBOX_STREAM_MAXLEN", "int", 1_000_000,
       "Redis outbox: entries kept (about) in each public stream (outcome, upstream, receipt, "
       "token), all shards together", minimum=1),
    _s("outbox.record_ttl", "CCS_OUTBOX_RECORD_TTL", "float", 0.0,
       "Redis outbox: seconds a finished message's record is kept for `ccs status` (0: for ever, "
       "as in SQLite)", minimum=0),
    # admin API
    _s("admin.enabled", "CCS_ADMIN_ENABLED", "bool", True, "serve the admin API on 127.0.0.1"),
    _s("admin.port", "CCS_ADMIN_PORT", "int", 8470, "admin API port (0: ephemeral)", **PORT),
    _s("admin.token", "CCS_ADMIN_TOKEN", "str", None,
       "bearer token the admin API requires (required when the API is enabled; at least 16 "
       "characters)", secret=True),
    _s("admin.connections", "CCS_ADMIN_CONNECTIONS", "int", 1000,
       "admin API connections open at once at most (event streams included)", minimum=2),
    _s("admin.event_clients", "CCS_ADMIN_EVENT_CLIENTS", "int", 64,
       "event-stream (/v1/events) subscribers at once at most; more are answered 503",
       minimum=1),
    _s("admin.read_timeout", "CCS_ADMIN_READ_TIMEOUT", "float", 10.0,
       "seconds an admin API client has to send a request's headers, and again its body",
       minimum=0.01),
    _s("admin.idle_timeout", "CCS_ADMIN_IDLE_TIMEOUT", "float", 30.0,
       "seconds an admin API connection may wait idle for its next request before it is closed",
       minimum=0.01),
    # token feedback webhook
    _s("webhook.url", "CCS_WEBHOOK_URL", "str", None,
       "URL that receives token events as signed JSON POSTs (http:// or https://)"),
    _s("webhook.secret", "CCS_WEBHOOK_SECRET", "str", None,
       "HMAC-SHA256 key for the X-CCS-Signature header", secret=True),
    _s("webhook.ca_file", "CCS_WEBHOOK_CA_FILE", "path", None,
       "extra CA certificates to trust for an https webhook"),
    _s("webhook.timeout", "CCS_WEBHOOK_TIMEOUT", "float", 10.0, "seconds per webhook POST",
       minimum=0.1),
    _s("webhook.max_backoff", "CCS_WEBHOOK_MAX_BACKOFF", "float", 300.0,
       "longest delay in seconds between retries of a failed webhook POST", minimum=0.01),
)

BY_KEY = {s.key: s for s in REGISTRY}


def declared() -> tuple[Setting, ...]:
    """The gateway's settings, the built-in providers', then those of every registered plugin
    provider; ConfigError naming a plugin's setting that takes a key or variable the gateway
    or a built-in provider owns."""
    own = REGISTRY + registry.builtin_settings()
    taken = {s.key for s in own} | {s.env for s in own}
    extra = registry.declared_settings()
    for s in extra:
        for name in (s.key, s.env):
            if name in taken:
                raise ConfigError(name, "a plugin declares a setting the gateway owns")
    return own + extra


def _by(attr: str) -> dict[str, Setting]:
    return {getattr(s, attr): s for s in declared()}


def _check_file_value(s: Setting, value: Any) -> Any:
    """Check a TOML value's type against the setting's."""
    name = s.type
    ok = {
        "str": isinstance(value, str),
        "path": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[name]
    if not ok:
        want = {"list": "a list of strings", "int": "an integer", "float": "a number",
                "bool": "true or false"}.get(name, "a string")
        raise ConfigError(s.key, f"expected {want}, got {value!r}")
    return float(value) if name == "float" else value


def _check_range(s: Setting, value: Any, name: str) -> None:
    if value is None:
        return
    if s.choices and value not in s.choices:
        raise ConfigError(name, f"expected one of {', '.join(s.choices)}, got {value!r}")
    if s.minimum is not None and value < s.minimum:
        raise ConfigError(name, f"must be at least {s.minimum:g}, got {value!r}")
    if s.maximum is not None and value > s.maximum:
        raise ConfigError(name, f"must be at most {s.maximum:g}, got {value!r}")
    if s.key == "gateway.providers":
        known = registry.known()
        for p in value:
            if p not in known:
                raise ConfigError(name, f"unknown provider {p!r} (known: {', '.join(known)}; "
                                        "a plugin's provider needs its module in CCS_PLUGINS "
                                        "or an installed entry point)")


def _load_plugins(doc: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Import the plugins the file or the environment names (the environment wins), and the
    installed entry points, before anything else is checked."""
    s = BY_KEY["gateway.plugins"]
    modules = s.default
    file_value = doc.get("gateway", {}).get("plugins") if isinstance(doc.get("gateway"),
                                                                       dict) else None
    if file_value is not None:
        modules = _check_file_value(s, file_value)
    if s.env in environ:
        modules = registry.parse_env(s, environ[s.env]) or []
    registry.load_plugins(modules)


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


class Settings(Mapping[str, Any]):
    """Resolved settings: a read-only mapping from TOML key to value."""

    def __init__(self, values: Mapping[str, Any], sources: Mapping[str, str] | None = None):
        self._declared = declared()
        self._values = {s.key: values.get(s.key, s.default) for s in self._declared}
        self._sources = dict(sources or {})

    @classmethod
    def load(cls, config: str | os.PathLike[str] | None = None,
             environ: Mapping[str, str] | None = None) -> Settings:
        """Read `config` (default ./ccs.toml when it exists), then the CCS_* environment."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        path = Path(config) if config is not None else Path(DEFAULT_CONFIG)
        if config is not None and not path.is_file():
            raise ConfigError("--config", f"no such file: {path}")
        doc: dict[str, Any] = {}
        if path.is_file():
            try:
                doc = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(str(path), f"not valid TOML: {exc}") from None
        _load_plugins(doc, environ)  # first: their providers and settings become known
        by_key, by_env = _by("key"), _by("env")
        for key, value in _flatten(doc):
            s = by_key.get(key)
            if s is None:
                raise ConfigError(key, f"unknown setting in {path}")
            values[key] = _check_file_value(s, value)
            _check_range(s, values[key], key)
            sources[key] = str(path)
        for name, raw in environ.items():
            s = by_env.get(name)
            if s is None:
                continue  # other CCS_* variables belong to other tools; only the file is strict
            values[s.key] = registry.parse_env(s, raw)
            _check_range(s, values[s.key], name)
            sources[s.key] = "environment"
        return cls(values, sources)

    @classmethod
    def defaults(cls) -> Settings:
        return cls({})

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed; keys use '__' for '.' (admin__port=0)."""
        values = dict(self._values)
        known = {s.key for s in declared()}  # a plugin loaded since may have added some
        for k, v in changes.items():
            key = k.replace("__", ".")
            if key not in known:
                raise ConfigError(key, "unknown setting")
            values[key] = v
        return Settings(values, self._sources)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def source(self, key: str) -> str:
        return self._sources.get(key, "default")

    def environ(self) -> dict[str, str]:
        """The settings as CCS_* variables (set ones only), to feed providers' from_env."""
        out: dict[str, str] = {}
        for s in self._declared:
            v = self._values[s.key]
            if v is None:
                continue
            if s.type == "bool":
                out[s.env] = "true" if v else "false"
            elif s.type == "list":
                out[s.env] = ",".join(v)
            elif s.type == "float":
                out[s.env] = repr(v)
            else:
                out[s.env] = str(v)
        return out

    def redacted(self) -> dict[str, Any]:
        """Every value, secrets replaced by '***' when set: safe to print or log."""
        secret = {s.key for s in self._declared if s.secret}
        out = {k: ("***" if k in secret and v is not None else v)
               for k, v in self._values.items()}
        from ccs.gateway.outbox import shown  # a redis:// outbox URL may carry a password

        out["outbox.path"] = shown(out["outbox.path"])
        for k, v in out.items():  # any URL may carry user:password (webhook, provider URLs)
            if isinstance(v, str):
                out[k] = mask_urls(v)
            elif isinstance(v, list):
                out[k] = [mask_urls(x) if isinstance(x, str) else x for x in v]
        return out

    def __repr__(self) -> str:
        return f"Settings({self.redacted()!r})"


def _default_text(s: Setting) -> str:
    if s.default is None:
        return "(unset)"
    if s.type == "list":
        return ",".join(s.default)
    if s.type == "bool":
        return "true" if s.default else "false"
    if s.type == "float":
        return f"{s.default:g}"
    return str(s.default)


def rst_table() -> str:
    """The settings table of docs/settings.rst, generated from the declarations: the
    gateway's, then each built-in provider's."""
    rows = [(s.env, s.key, _default_text(s), s.meaning + (" (secret)" if s.secret else ""))
            for s in REGISTRY + registry.builtin_settings()]
    head = ("Variable", "Config key", "Default", "Meaning")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    rule = "  ".join("=" * w for w in widths)

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([rule, line(head), rule, *(line(r) for r in rows), rule]) + "\n"
