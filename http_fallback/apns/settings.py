"""The settings the `apns` and `apns-binary` providers declare: TOML key, CCS_* variable, type,
default, meaning.

Read by the gateway through the declaration, and by the config's `from_env`, so each variable is
named here only.
"""

from __future__ import annotations

from ccs.registry import Setting

SETTINGS: tuple[Setting, ...] = (
    Setting("apns.host", "CCS_APNS_HOST", "str", None, "APNs host (provider default if unset)"),
    Setting("apns.sandbox", "CCS_APNS_SANDBOX", "bool", None,
            "use the APNs development environment"),
    Setting("apns.port", "CCS_APNS_PORT", "int", None, "APNs port (443 or 2197)", minimum=0,
            maximum=65535),
    Setting("apns.key_file", "CCS_APNS_KEY_FILE", "path", None, "token auth: .p8 signing key"),
    Setting("apns.key_id", "CCS_APNS_KEY_ID", "str", None, "token auth: key id"),
    Setting("apns.team_id", "CCS_APNS_TEAM_ID", "str", None, "token auth: team id"),
    Setting("apns.cert", "CCS_APNS_CERT", "path", None, "certificate auth: PEM certificate"),
    Setting("apns.cert_key", "CCS_APNS_CERT_KEY", "path", None,
            "certificate auth: PEM private key"),
    Setting("apns.pfx", "CCS_APNS_PFX", "path", None, "certificate auth: PKCS#12 file"),
    Setting("apns.pfx_passphrase", "CCS_APNS_PFX_PASSPHRASE", "str", None,
            "passphrase of the PKCS#12 file", secret=True),
    Setting("apns.topic", "CCS_APNS_TOPIC", "str", None, "default apns-topic (bundle id)"),
    Setting("apns.connections", "CCS_APNS_CONNECTIONS", "int", None, "APNs HTTP/2 connections",
            minimum=1),
    Setting("apns.retry_attempts", "CCS_APNS_RETRY_ATTEMPTS", "int", 3,
            "extra attempts for a notification answered 429, 500 or 503", minimum=0),
    Setting("apns.retry_seconds", "CCS_APNS_RETRY_SECONDS", "float", 30.0,
            "no retry of a notification starts later than this after it was sent", minimum=0),
)

BINARY_SETTINGS: tuple[Setting, ...] = (
    Setting("apns.legacy_host", "CCS_APNS_LEGACY_HOST", "str", None, "binary interface host"),
    Setting("apns.legacy_port", "CCS_APNS_LEGACY_PORT", "int", None, "binary interface port",
            minimum=0, maximum=65535),
    Setting("apns.binary_command", "CCS_APNS_BINARY_COMMAND", "int", None,
            "binary interface: 2 (frames of items) or 1 (enhanced format); default 2",
            minimum=1, maximum=2),
    Setting("apns.binary_cache", "CCS_APNS_BINARY_CACHE", "int", None,
            "binary interface: unresolved notifications before the writer waits; default 1000",
            minimum=1),
    Setting("apns.binary_wait", "CCS_APNS_BINARY_WAIT", "float", None,
            "binary interface: seconds the writer waits for room before the cache doubles; "
            "default 0.1", minimum=0),
    Setting("apns.binary_quiet", "CCS_APNS_BINARY_QUIET", "float", None,
            "binary interface: seconds without an error response after which a notification is "
            "ok (the gateway never confirms); default 1.0", minimum=0.001),
    Setting("apns.feedback_host", "CCS_APNS_FEEDBACK_HOST", "str", None, "feedback service host"),
    Setting("apns.feedback_port", "CCS_APNS_FEEDBACK_PORT", "int", None, "feedback service port",
            minimum=0, maximum=65535),
)
