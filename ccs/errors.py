"""Exceptions for programming and configuration errors (outcomes are values, not exceptions)."""

from __future__ import annotations


class ConfigError(Exception):
    """A bad or missing setting; names the key or environment variable."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class RouteError(ValueError):
    """A message cannot be accepted or routed; `field` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
