"""Exceptions for programming and configuration errors (outcomes are values, not exceptions)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad or missing setting: `key` names it (TOML key, CCS_* variable, or the config field
    when built from Python). The one configuration error of the gateway and every provider; a
    ValueError, so code that caught ValueError from a provider's config still does."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class RouteError(ValueError):
    """A message cannot be accepted or routed; `field` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
