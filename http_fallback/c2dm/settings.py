"""The settings the C2DM provider declares: TOML key, CCS_* variable, type, default, meaning.

Read by the gateway through the declaration, and by the config's `from_env`, so each
variable is named here only.
"""

from __future__ import annotations

from ccs.registry import Setting

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
