"""The settings the MPNS provider declares: TOML key, CCS_* variable, type, default, meaning.

Read by the gateway through the declaration, and by the config's `from_env`, so each
variable is named here only.
"""

from __future__ import annotations

from ccs.registry import Setting

SETTINGS: tuple[Setting, ...] = (
    Setting("mpns.cert", "CCS_MPNS_CERT", "path", None,
            "client certificate for authenticated MPNS"),
    Setting("mpns.key", "CCS_MPNS_KEY", "path", None, "private key of the MPNS client certificate"),
)
