"""The `apns` (HTTP/2) and `apns-binary` providers as the gateway finds them (entry points)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ccs.provider import Provider
from ccs.registry import ProviderSpec
from http_fallback.adapt import lazy
from http_fallback.apns.settings import BINARY_SETTINGS, SETTINGS

RENAMES: dict[str, str | None] = {"to": "device", "message_id": None}
_notification = lazy("http_fallback.apns.model", "Notification", RENAMES)


def _command() -> Any:
    from http_fallback.apns.command import apns

    return apns


def _create(settings: Any) -> Provider:
    from http_fallback.apns import ApnsClient, ApnsConfig

    return ApnsClient(ApnsConfig.from_settings(settings))


def _check(message: Any) -> None:
    """Everything the request check refuses but a missing topic (a configured default may
    supply it)."""
    from http_fallback.apns.model import Notification
    from http_fallback.apns.protocol import prepare

    if isinstance(message, Notification):
        prepare(message, message.topic or "com.example.check")


def _create_binary(settings: Any) -> Provider:
    from http_fallback.apns.binary import create_provider

    return create_provider(settings)


def _adapt_binary(payload: Mapping[str, Any]) -> Any:
    """A Notification, refusing fields the binary interface has no place for."""
    from http_fallback.apns.binary.client import check_fields

    note = _notification(payload)
    check_fields(note)
    return note


def _endpoints(settings: Any, first: str | None) -> list[tuple[str, int]]:
    host = settings["apns.host"] or (
        "api.sandbox.push.apple.com" if settings["apns.sandbox"] else "api.push.apple.com")
    return [(host, settings["apns.port"] or 443)]


def _endpoints_binary(settings: Any, first: str | None) -> list[tuple[str, int]]:
    host = settings["apns.legacy_host"] or (
        "gateway.sandbox.push.apple.com" if settings["apns.sandbox"] else "gateway.push.apple.com")
    return [(host, settings["apns.legacy_port"] or 2195)]


SPEC = ProviderSpec("apns", _create, settings=SETTINGS, adapt=_notification, check=_check,
                    endpoints=_endpoints, command=_command, summary="APNs HTTP/2")
BINARY = ProviderSpec("apns-binary", _create_binary, settings=BINARY_SETTINGS, adapt=_adapt_binary,
                      endpoints=_endpoints_binary, summary="APNs binary interface")
