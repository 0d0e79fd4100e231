"""The `http` provider (FCM HTTP v1) as the gateway finds it: entry point ccs_gateway.providers."""

from __future__ import annotations

from typing import Any

from ccs.provider import Provider
from ccs.registry import ProviderSpec, Setting


def _command() -> Any:
    from http_fallback.fcm.command import fcm

    return fcm


def _preflight(provider: Provider, timeout: float) -> str | None:
    from http_fallback.fcm.preflight import token_endpoint

    return token_endpoint(provider, timeout)


def _create(settings: Any) -> Provider:
    from http_fallback.fcm import FcmClient, FcmConfig

    return FcmClient(FcmConfig.from_env(settings.environ()))


def _endpoints(settings: Any, first: str | None) -> list[tuple[str, int]]:
    from http_fallback.endpoints import of

    return [of(settings["fcm.url"] or "https://fcm.googleapis.com")]


# No adapter: `ccs send` builds the v1 message itself; the router converts a CCS-shaped one.
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

SPEC = ProviderSpec("http", _create, settings=SETTINGS, endpoints=_endpoints, command=_command,
                    preflight=_preflight, summary="FCM HTTP v1")
