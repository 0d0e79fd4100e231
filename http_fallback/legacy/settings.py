"""The settings the legacy HTTP provider declares: TOML key, CCS_* variable, type, default, meaning.

Read by the gateway through the declaration, and by the config's `from_env`, so each
variable is named here only.
"""

from __future__ import annotations

from ccs.registry import Setting

SETTINGS: tuple[Setting, ...] = (
    Setting("legacy.url", "CCS_LEGACY_URL", "str", None, "legacy HTTP send URL"),
    Setting("legacy.key", "CCS_LEGACY_KEY", "str", None, "legacy HTTP server key", secret=True),
)
