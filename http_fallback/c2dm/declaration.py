"""The `c2dm` provider (Android C2DM, retired) as the gateway finds it (entry point)."""

from __future__ import annotations

from typing import Any

from ccs.provider import Provider
from ccs.registry import ProviderSpec, Setting
from http_fallback.adapt import lazy
from http_fallback.endpoints import of


def _command() -> Any:
    from http_fallback.emulator_cli import c2dm

    return c2dm


def _create(settings: Any) -> Provider:
    from http_fallback.c2dm import C2dmClient, C2dmConfig

    return C2dmClient(C2dmConfig.from_env(settings.environ()))


def _endpoints(settings: Any, first: str | None) -> list[tuple[str, int]]:
    return [of(settings["c2dm.login_url"] or "https://www.google.com/accounts/ClientLogin"),
            of(settings["c2dm.url"] or "https://android.apis.google.com/c2dm/send")]


_ADAPT = lazy("http_fallback.c2dm.model", "C2dmMessage",
              {"message_id": "id", "to": "registration_id"})

SETTINGS: tuple[Setting, ...] = (
    Setting("c2dm.url", "CCS_C2DM_URL", "str", None, "C2DM send URL"),
    Setting("c2dm.login_url", "CCS_C2DM_LOGIN_URL", "str", None, "ClientLogin URL"),
    Setting("c2dm.email", "CCS_C2DM_EMAIL", "str", None, "ClientLogin account"),
    Setting("c2dm.password", "CCS_C2DM_PASSWORD", "str", None, "ClientLogin password", secret=True),
    Setting("c2dm.source", "CCS_C2DM_SOURCE", "str", None, "ClientLogin source (application name)"),
    Setting("c2dm.quota_lock", "CCS_C2DM_QUOTA_LOCK", "path", None,
            "file written when the daily quota is exceeded (provider default if unset)"),
    Setting("c2dm.callback_url", "CCS_C2DM_CALLBACK_URL", "str", None,
            "node2dm-style bad-token callback URL of the C2DM provider"),
    Setting("c2dm.callback_secret", "CCS_C2DM_CALLBACK_SECRET", "str", None,
            "shared secret of the C2DM bad-token callback", secret=True),
)

SPEC = ProviderSpec("c2dm", _create, settings=SETTINGS, command=_command, endpoints=_endpoints,
                    adapt=_ADAPT, summary="Android C2DM")
