"""The settings the FCM HTTP v1 provider (`http`) declares: TOML key, CCS_* variable, type,
default, meaning.

Read by the gateway through the declaration, and by the config's `from_env`, so each variable is
named here only.
"""

from __future__ import annotations

from ccs.registry import Setting

SETTINGS: tuple[Setting, ...] = (
    Setting("fcm.credentials", "CCS_FCM_CREDENTIALS", "path", None,
            "service-account JSON file for FCM HTTP v1"),
    Setting("fcm.project", "CCS_FCM_PROJECT", "str", None, "Firebase project id"),
    Setting("fcm.url", "CCS_FCM_URL", "str", None,
            "FCM HTTP v1 base URL (provider default if unset)"),
    Setting("fcm.iid_url", "CCS_FCM_IID_URL", "str", None,
            "Instance ID (topic management) base URL (provider default if unset)"),
    Setting("fcm.concurrency", "CCS_FCM_CONCURRENCY", "int", None,
            "FCM HTTP v1 requests in flight over HTTP/1.1, one socket each (provider default if "
            "unset)", minimum=1),
    Setting("fcm.connections", "CCS_FCM_CONNECTIONS", "int", None,
            "FCM HTTP v1 HTTP/2 connections, each carrying up to the server's stream limit "
            "(provider default if unset)", minimum=1),
)
