"""The `http` provider (FCM HTTP v1) as the gateway finds it: entry point ccs_gateway.providers."""

from __future__ import annotations

from typing import Any

from ccs.provider import Provider
from ccs.registry import ProviderSpec
from http_fallback.fcm.settings import SETTINGS


def _command() -> Any:
    from http_fallback.fcm.command import fcm

    return fcm


def _preflight(provider: Provider, timeout: float) -> str | None:
    from http_fallback.fcm.preflight import token_endpoint

    return token_endpoint(provider, timeout)


def _create(settings: Any) -> Provider:
    from http_fallback.fcm import FcmClient, FcmConfig

    return FcmClient(FcmConfig.from_settings(settings))


def _endpoints(settings: Any, first: str | None) -> list[tuple[str, int]]:
    from http_fallback.endpoints import of

    return [of(settings["fcm.url"] or "https://fcm.googleapis.com")]


# No adapter: `ccs send` builds the v1 message itself; the router converts a CCS-shaped one.
SPEC = ProviderSpec("http", _create, settings=SETTINGS, endpoints=_endpoints, command=_command,
                    preflight=_preflight, summary="FCM HTTP v1")
