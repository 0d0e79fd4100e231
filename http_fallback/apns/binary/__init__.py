"""The APNs binary interface (retired by Apple on 31 March 2021) and its feedback service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def create_provider(settings: Mapping[str, Any]) -> Any:
    """The `apns-binary` provider from typed apns.* settings (certificate auth,
    apns.legacy_*)."""
    from http_fallback.apns.binary.client import BinaryClient
    from http_fallback.apns.config import ApnsConfig

    return BinaryClient.from_config(ApnsConfig.from_settings(settings))
