"""The `c2dm` provider (Android C2DM, retired) as the gateway finds it (entry point)."""

from __future__ import annotations

from typing import Any

from ccs.provider import Provider
from ccs.registry import ProviderSpec
from http_fallback.adapt import lazy
from http_fallback.c2dm.settings import SETTINGS
from http_fallback.endpoints import of


def _command() -> Any:
    from http_fallback.emulator_cli import c2dm

    return c2dm


def _create(settings: Any) -> Provider:
    from http_fallback.c2dm import C2dmClient, C2dmConfig

    return C2dmClient(C2dmConfig.from_settings(settings))


def _endpoints(settings: Any, first: str | None) -> list[tuple[str, int]]:
    return [of(settings["c2dm.login_url"] or "https://www.google.com/accounts/ClientLogin"),
            of(settings["c2dm.url"] or "https://android.apis.google.com/c2dm/send")]


_ADAPT = lazy("http_fallback.c2dm.model", "C2dmMessage",
              {"message_id": "id", "to": "registration_id"})

SPEC = ProviderSpec("c2dm", _create, settings=SETTINGS, command=_command, endpoints=_endpoints,
                    adapt=_ADAPT, summary="Android C2DM")
