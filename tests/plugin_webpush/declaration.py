"""The provider's declaration: name, settings, factory, message adapter, payload, emulator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ccs.registry import ProviderSpec, Setting
from tests.plugin_webpush.client import WebpushClient, WebpushMessage

SETTINGS = (
    Setting("webpush.url", "CCS_WEBPUSH_URL", "str", None,
            "push service URL the webpush provider POSTs to (http:// on loopback)"),
    Setting("webpush.token", "CCS_WEBPUSH_TOKEN", "str", None,
            "bearer token the webpush provider sends", secret=True),
    Setting("webpush.timeout", "CCS_WEBPUSH_TIMEOUT", "float", 5.0,
            "seconds per webpush request", minimum=0.01),
)


def create(settings: Mapping[str, Any]) -> WebpushClient:
    url = settings["webpush.url"]
    if not url:
        raise ValueError("webpush.url: required for the webpush provider")
    return WebpushClient(url, settings["webpush.token"], settings["webpush.timeout"])


def adapt(stored: Mapping[str, Any]) -> WebpushMessage:
    """{"to": subscription, "data": {...}, "message_id": ...}: anything else is refused."""
    unknown = set(stored) - {"to", "data", "message_id"}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: not a webpush field")
    to = stored.get("to")
    if not isinstance(to, str) or not to:
        raise ValueError("to: a webpush message needs a subscription id")
    data = stored.get("data") or {}
    if not isinstance(data, Mapping):
        raise ValueError("data: must be a JSON object")
    return WebpushMessage(to, dict(data), stored.get("message_id"))


def check(message: WebpushMessage) -> None:
    if len(message.to) > 64:
        raise ValueError("to: a webpush subscription id is at most 64 characters")


def payload(target: str | None, options: Any) -> dict[str, Any]:
    """`ccs send --via webpush`: targets are subscription ids; --data, --title, --body."""
    data = dict(options.data or {})
    data.update({k: v for k, v in (("title", options.title), ("body", options.body)) if v})
    return {"to": target, "data": data}


def endpoints(settings: Mapping[str, Any], first: str | None) -> list[tuple[str, int]]:
    parts = urlsplit(settings.get("webpush.url") or "")
    return [(parts.hostname or "", parts.port or 80)] if parts.hostname else []


def emulator(port: int) -> Any:
    from tests.plugin_webpush.emulator import WebpushEmulator

    return WebpushEmulator(port).start()


SPEC = ProviderSpec("webpush", create, settings=SETTINGS, adapt=adapt, check=check,
                    payload=payload, endpoints=endpoints, emulator=emulator,
                    summary="test provider: JSON POSTs to a loopback push service")


def spec() -> ProviderSpec:
    return SPEC
