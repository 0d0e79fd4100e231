"""The `mpns` provider (Microsoft Push Notification Service) as the gateway finds it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ccs.provider import Provider
from ccs.registry import ProviderSpec
from http_fallback.adapt import dataclass_adapter
from http_fallback.endpoints import of
from http_fallback.mpns.settings import SETTINGS

KINDS = {"toast": "Toast", "tile": "Tile", "flip_tile": "FlipTile",
         "iconic_tile": "IconicTile", "cycle_tile": "CycleTile", "raw": "Raw"}


def _command() -> Any:
    from http_fallback.emulator_cli import mpns

    return mpns


def _create(settings: Any) -> Provider:
    from http_fallback.mpns import MpnsClient, MpnsConfig

    return MpnsClient(MpnsConfig.from_settings(settings))


def _adapt(payload: Mapping[str, Any]) -> Any:
    """{"to": channel URI, one of toast/tile/flip_tile/iconic_tile/cycle_tile/raw, ...}."""
    from http_fallback.mpns import model

    found = [k for k in KINDS if k in payload]
    if len(found) != 1:
        raise ValueError(f"notification: give exactly one of {', '.join(KINDS)}")
    kind = found[0]
    cls = getattr(model, KINDS[kind])
    body = payload[kind]
    note = cls(body) if kind == "raw" else dataclass_adapter(cls, {})(body)
    rest = {k: v for k, v in payload.items() if k != kind}
    message = dataclass_adapter(model.MpnsMessage, {"to": "channel_uri", "message_id": "id"})
    return message({**rest, "notification": note})


def _endpoints(settings: Any, first: str | None) -> list[tuple[str, int]]:
    return [of(first)] if first else []  # the channel URI names the host


SPEC = ProviderSpec("mpns", _create, settings=SETTINGS, adapt=_adapt, endpoints=_endpoints,
                    command=_command, summary="Microsoft MPNS")
