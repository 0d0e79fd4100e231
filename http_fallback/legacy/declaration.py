"""The `legacy` provider (legacy GCM/FCM HTTP) as the gateway finds it (entry point)."""

from __future__ import annotations

from typing import Any

from ccs.provider import Provider
from ccs.registry import ProviderSpec
from http_fallback.adapt import lazy
from http_fallback.endpoints import of
from http_fallback.legacy.settings import SETTINGS


def _command() -> Any:
    from http_fallback.emulator_cli import legacy

    return legacy


def _create(settings: Any) -> Provider:
    from http_fallback.legacy import LegacyClient, LegacyConfig

    return LegacyClient(LegacyConfig.from_settings(settings))


def _endpoints(settings: Any, first: str | None) -> list[tuple[str, int]]:
    return [of(settings["legacy.url"] or "https://fcm.googleapis.com/fcm/send")]


_ADAPT = lazy("http_fallback.legacy.model", "LegacyMessage",
              {"message_id": "id", "delivery_receipt_requested": None})

SPEC = ProviderSpec("legacy", _create, settings=SETTINGS, command=_command, endpoints=_endpoints,
                    adapt=_ADAPT, summary="legacy GCM HTTP")
