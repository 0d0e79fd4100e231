"""Where a provider connects, for `ccs send` to tell "could not reach the service" (exit 3)."""

from __future__ import annotations

from urllib.parse import urlsplit


def of(url: str) -> tuple[str, int]:
    """(host, port) of a URL; the scheme's port when it names none."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port
