"""The `ccs` provider (Google CCS over XMPP) as the gateway finds it (entry point), with its
settings."""

from __future__ import annotations

from typing import Any

from ccs.provider import Provider
from ccs.registry import ProviderSpec
from ccs.xmpp.settings import SETTINGS


def _create(settings: Any) -> Provider:
    from ccs.xmpp.client import CcsClient, CcsConfig

    return CcsClient(CcsConfig.from_settings(settings))


SPEC = ProviderSpec("ccs", _create, settings=SETTINGS, summary="Google CCS (XMPP)")
