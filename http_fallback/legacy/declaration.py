"""The `legacy` provider (legacy GCM/FCM HTTP) as the gateway finds it (entry point)."""

from __future__ import annotations

from typing import Any

from ccs.provider import Provider
from ccs.registry import ProviderSpec
from http_fallback.adapt import lazy


def _command() -> Any:
    from http_fallback.emulator_cli import legacy

    return legacy


def _create(settings: Any) -> Provider:
    from http_fallback.legacy import LegacyClient, LegacyConfig

    return LegacyClient(LegacyConfig.from_env(settings.environ()))


SPEC = ProviderSpec("legacy", _create, command=_command, adapt=lazy(
    "http_fallback.legacy.model", "LegacyMessage",
    {"message_id": "id", "delivery_receipt_requested": None}), summary="legacy GCM HTTP")
